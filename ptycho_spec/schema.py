"""Run spec v1: the settings a user writes, as frozen attrs classes.

One class per TOML table. The same classes hold a *resolved* run inside a lock: there every
``"auto"`` has been replaced by a concrete value (see ``specs/spec-v1.md``), so one name means
one concept from the spec file to the runner.

Conventions for field types (the converter in ``convert.py`` implements them):

* ``"auto"`` means "the compiler decides"; the rule is in the field's ``auto`` metadata and the
  decision is recorded in the lock with its provenance. A locked run never holds ``"auto"``.
* TOML has no null, so optional fields accept the string ``"none"`` for ``None``; the lock writes
  ``None`` back as ``"none"``.
* ``int`` never accepts ``bool`` (TOML tells them apart); ``float`` accepts integers.

Field-local rules are validators here; rules that relate two fields live in ``rules.py``.
Each field's documentation sits in its ``doc`` metadata, from which the JSON Schema and the
Markdown field reference under ``specs/`` are generated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Final, Literal

import attrs
from attrs import field, frozen

SPEC_VERSION: Final = 1
AUTO: Final = "auto"

Task = Literal["train", "infer", "train+infer"]
Source = Literal["npz", "simulate", "ptychodus"]
Measurement = Literal["amplitude", "counts"]
ObjectRecipe = Literal["lines"]
ModelType = Literal["pinn", "supervised"]
Architecture = Literal["cnn"]
AmpActivation = Literal["sigmoid", "silu", "softplus", "relu"]
Loss = Literal["poisson", "mae"]
Optimizer = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["constant", "plateau", "exponential", "warmup_cosine"]
ClipAlgorithm = Literal["norm", "value"]
Stitch = Literal["position", "probe"]
Accelerator = Literal["cpu", "cuda", "mps"]
Strategy = Literal["single_device", "ddp", "ddp_spawn", "fsdp"]
Precision = Literal["32-true", "bf16-mixed", "16-mixed", "64-true"]
MatmulPrecision = Literal["highest", "high", "medium"]
CheckpointMode = Literal["min", "max"]
Logger = Literal["csv", "tensorboard", "mlflow", "none"]
SUPPORTED_N: Final = (64, 128, 256)
# Lightning's other names for an accelerator: a spec may use them, the compiler writes ours.
ACCELERATOR_ALIASES: Final = MappingProxyType({"gpu": "cuda"})


# --- validators -------------------------------------------------------------------------------
# Each validator skips the sentinels ("auto", None): the type already limits where they may
# appear, and the compiler replaces them before a run is locked.


def _is_sentinel(value: object) -> bool:
    return value is None or value == AUTO


@frozen
class _Bound:
    """Numeric bound check with a message that names the limit."""

    op: str
    limit: float

    def __call__(self, _inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if _is_sentinel(value) or isinstance(value, str):
            return
        ok = {
            ">": value > self.limit,
            ">=": value >= self.limit,
            "<": value < self.limit,
            "<=": value <= self.limit,
        }[self.op]
        if not ok:
            shown = {">=": "≥", "<=": "≤"}.get(self.op, self.op)
            msg = f"must be {shown} {_fmt(self.limit)} (got {_fmt(value)})"
            raise ValueError(msg)

    def __repr__(self) -> str:
        return f"<bound {self.op} {self.limit}>"


def _fmt(x: float) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else str(x)


def gt(limit: float) -> _Bound:
    return _Bound(">", limit)


def ge(limit: float) -> _Bound:
    return _Bound(">=", limit)


def lt(limit: float) -> _Bound:
    return _Bound("<", limit)


def le(limit: float) -> _Bound:
    return _Bound("<=", limit)


def finite(_inst: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"must be a finite number (got {value})"
        raise ValueError(msg)


def one_of_n(_inst: object, _attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, int) and value not in SUPPORTED_N:
        msg = f'must be one of {", ".join(map(str, SUPPORTED_N))} or "auto" (got {value})'
        raise ValueError(msg)


def setting(
    default: Any = attrs.NOTHING,
    *,
    doc: str,
    checks: tuple[Callable[..., None], ...] = (),
    aliases: tuple[str, ...] = (),
    auto: str | None = None,
    unit: str | None = None,
    value_aliases: dict[str, str] | None = None,
    lock_only: bool = False,
) -> Any:
    """Declare a spec field with its documentation and rules.

    ``aliases`` are PtychoPINN key names the compiler accepts, rewrites to this field's name
    and reports as deprecated; ``value_aliases`` do the same for values (``swish`` → ``silu``).
    ``auto`` documents how the compiler resolves ``"auto"``. ``lock_only`` fields are derived
    and appear in locks, never in specs.
    """
    metadata = {
        "doc": doc,
        "aliases": aliases,
        "auto": auto,
        "unit": unit,
        "value_aliases": value_aliases or {},
        "lock_only": lock_only,
    }
    validator = [finite, *checks] if checks else [finite]
    return field(default=default, validator=validator, metadata=metadata, kw_only=True)


def section(cls: type, *, doc: str) -> Any:
    return field(factory=cls, metadata={"doc": doc, "section": True}, kw_only=True)


# --- [run] ------------------------------------------------------------------------------------


@frozen
class Run:
    """What the run is called, what it does, and its master seed."""

    name: str = setting(AUTO, doc="Run name, used in output paths.", auto="the spec file's stem")
    task: Task = setting(
        "train+infer",
        doc='"train", "infer", or "train+infer" (train, then reconstruct the test set).',
    )
    seed: int = setting(
        0,
        doc="Master seed; every per-purpose seed in the lock is derived from it.",
        checks=(ge(0),),
    )
    output_dir: str = setting(
        "runs/{name}",
        doc="Run directory. `{name}` is replaced by run.name; relative paths resolve against "
        "the folder of the spec file that sets it.",
    )


@frozen
class Seeds:
    """Per-purpose seeds derived from ``run.seed`` (lock only)."""

    simulate_train: int = setting(0, doc="Training object and scan simulation.", lock_only=True)
    simulate_test: int = setting(0, doc="Test object simulation.", lock_only=True)
    noise: int = setting(0, doc="Poisson noise of simulated patterns.", lock_only=True)
    grouping: int = setting(0, doc="Group sampling and neighbour choice.", lock_only=True)
    split: int = setting(0, doc="Train/validation and train/test splits.", lock_only=True)
    init: int = setting(0, doc="Network weight initialization.", lock_only=True)
    loader: int = setting(0, doc="DataLoader shuffling and worker seeds.", lock_only=True)
    refine: int = setting(0, doc="Refinement minibatch order.", lock_only=True)


# --- [data] -----------------------------------------------------------------------------------


@frozen
class Simulate:
    """Simulated data: the PtychoPINN "lines" recipe (used when data.source = "simulate")."""

    object: ObjectRecipe = setting(
        "lines",
        doc='Object recipe. "lines": random lines, Gaussian-blurred sum; phase = π·tanh(...).',
    )
    object_size: int = setting(392, doc="Object side.", unit="px", checks=(ge(8),))
    probe: str = setting(
        "disk",
        doc='"disk" for a synthetic disk probe of side N, or the path of an NPZ holding '
        "probeGuess.",
    )
    scan_step_train: int = setting(
        4, doc="Raster stride of training scans.", unit="px", checks=(ge(1),)
    )
    scan_step_test: int = setting(
        10, doc="Raster stride of test scans.", unit="px", checks=(ge(1),)
    )
    n_train_objects: int = setting(1, doc="Independent training objects.", checks=(ge(1),))
    n_test_objects: int = setting(1, doc="Independent test objects.", checks=(ge(0),))
    nphotons: float = setting(
        1e9, doc="Expected photons per pattern (Poisson noise).", unit="photons", checks=(gt(0),)
    )


@frozen
class Ptychodus:
    """A ptychodus product plus its diffraction file (used when data.source = "ptychodus").
    The product's own scan is trained on (PINN training is self-supervised) and reconstructed,
    unless data.test_fraction holds part of it out; the reconstruction, in the frame of the
    product's object, is also written as a ptychodus product, `reconstruction.h5`.
    """

    product_file: str | None = setting(
        None,
        doc="ptychodus product HDF5: probe, positions in metres, and the object whose pixel "
        "grid is the reconstruction's frame (and the labels of supervised training).",
    )
    diffraction_file: str | None = setting(
        None,
        doc="Detector counts: HDF5 with patterns/indexes/bad_pixels, or NPZ with patterns "
        "(indexes, bad_pixels optional); paired to positions by scan index; bad pixels are "
        "excluded from the input and the loss.",
    )


@frozen
class Data:
    """Where the diffraction data comes from and how it is grouped."""

    source: Source | None = setting(
        None, doc='"npz" (PtychoPINN data contract), "simulate", or "ptychodus". Required.'
    )
    train_file: str | None = setting(
        None,
        doc="Training NPZ (diff3d or diffraction, xcoords, ycoords, probeGuess).",
        aliases=("train_data_file",),
    )
    test_file: str | None = setting(
        None, doc="Test NPZ, same contract.", aliases=("test_data_file",)
    )
    measurement: Measurement | Literal["auto"] = setting(
        AUTO,
        doc='How diffraction values are stored: "amplitude" (sqrt of counts) or "counts".',
        auto="inspected in the data file at compile time (integer-valued data are counts); "
        "simulated data are amplitude",
    )
    n_groups: int | Literal["all", "auto"] = setting(
        AUTO,
        doc="Number of samples (groups) drawn, whatever the gridsize.",
        aliases=("n_images",),
        auto='512 for training; "all" for inference-only runs',
        checks=(ge(1),),
    )
    n_subsample: int | None = setting(
        None, doc="Subsample the raw patterns to this many before grouping.", checks=(ge(1),)
    )
    neighbor_count: int | Literal["auto"] | None = setting(
        AUTO,
        doc="K: nearest-neighbour pool from which gridsize² patterns form a group.",
        aliases=("K",),
        auto='4 (at least gridsize²) when model.gridsize > 1, "none" otherwise',
        checks=(ge(1),),
    )
    sequential_sampling: bool = setting(
        False, doc="Take the first n_groups patterns as group seeds instead of a random draw."
    )
    test_fraction: float | None = setting(
        None,
        doc="Split one file into train/test by this fraction of patterns when there is no "
        "test_file (with ptychodus data: hold part of the product's scan out of training).",
        checks=(gt(0), lt(1)),
    )
    simulate: Simulate = section(Simulate, doc="Simulation recipe.")
    ptychodus: Ptychodus = section(Ptychodus, doc="ptychodus product input.")


# --- [model] ----------------------------------------------------------------------------------


@frozen
class Model:
    """The PtychoPINN generator and its physics."""

    N: int | Literal["auto"] = setting(  # the field's name in PtychoPINN
        AUTO,
        doc="Patch side (64, 128 or 256).",
        unit="px",
        auto="the probe side in the data (a simulated disk probe: 64)",
        checks=(one_of_n,),
    )
    gridsize: int = setting(
        1, doc="C = gridsize² patterns per sample.", aliases=("grid_size",), checks=(ge(1),)
    )
    model_type: ModelType = setting(
        "pinn",
        doc='"pinn" (physics loss, no labels) or "supervised" (amplitude/phase L1 on labels).',
        aliases=("mode",),
        value_aliases={"Unsupervised": "pinn", "Supervised": "supervised"},
    )
    architecture: Architecture = setting("cnn", doc="Generator architecture.")
    n_filters_scale: int = setting(2, doc="Width multiplier of the CNN.", checks=(ge(1),))
    center_input: bool = setting(
        True,
        doc="Feed the generator (x − x̄)/s: each pattern x minus the training set's mean "
        "pattern x̄, over the patterns' standard deviation s about it (both frozen from the "
        "training set and kept in the model). The object's signal is a small change on the "
        "probe's own pattern; centred, it reaches the network at full scale. false: "
        "PtychoPINN's input x.",
    )
    amp_activation: AmpActivation = setting(
        "sigmoid",
        doc="Activation of the amplitude head.",
        value_aliases={"swish": "silu"},
    )
    object_big: bool | Literal["auto"] = setting(
        AUTO,
        doc="Merge the C patches of a group onto a shared canvas (overlap constraint).",
        auto="true when gridsize > 1",
    )
    probe_big: bool | Literal["auto"] = setting(
        AUTO,
        doc="Let the decoder fill the outer N/4 border of each patch (with pad_object only).",
        auto="the value of pad_object",
    )
    probe_mask: bool = setting(False, doc="Apply a soft disk mask (diameter N/2) to the probe.")
    probe_scale: float = setting(
        4.0, doc="Probe normalization: P / (probe_scale · mean|P|), applied once.", checks=(gt(0),)
    )
    pad_object: bool = setting(
        False,
        doc="Predict the object on the central N/2 region and zero-pad to N (PtychoPINN's "
        "default); a probe that lights more than that region leaves light it cannot explain.",
    )
    gaussian_smoothing_sigma: float = setting(
        0.0,
        doc="Gaussian smoothing of the exit wave (3×3 kernel); 0 disables.",
        unit="px",
        checks=(ge(0),),
    )
    probe_trainable: bool = setting(
        False,
        doc="Optimize the probe with the network. Only the overlap constraint (gridsize > 1 with "
        "object_big) ties it to the object; otherwise use refine.probe.",
    )
    intensity_scale_trainable: bool = setting(
        True, doc="Optimize the global amplitude gain between object and diffraction."
    )


# --- [training] -------------------------------------------------------------------------------


@frozen
class Training:
    """Optimization of the generator."""

    nepochs: int = setting(
        50, doc="Training epochs.", aliases=("epochs", "max_epochs"), checks=(ge(1),)
    )
    batch_size: int = setting(16, doc="Samples per batch.", checks=(ge(1),))
    val_fraction: float = setting(
        0.05,
        doc="Fraction of training groups held out for validation; 0 disables.",
        checks=(ge(0), lt(1)),
    )
    loss: Loss = setting(
        "poisson",
        doc='Diffraction data term: "poisson" (negative log-likelihood) or "mae" (amplitude).',
        aliases=("torch_loss_mode",),
    )
    nll_weight: float | Literal["auto"] = setting(
        AUTO,
        doc="Weight of the Poisson term.",
        auto='1 when loss = "poisson", else 0',
        checks=(ge(0),),
    )
    mae_weight: float | Literal["auto"] = setting(
        AUTO,
        doc="Weight of the amplitude MAE term.",
        auto='1 when loss = "mae", else 0',
        checks=(ge(0),),
    )
    realspace_weight: float = setting(
        0.0, doc="Weight of the total-variation term on the predicted object.", checks=(ge(0),)
    )
    nphotons: float | Literal["auto"] = setting(
        AUTO,
        doc="Physical photon scale of the data (expected photons per pattern).",
        unit="photons",
        auto="data.simulate.nphotons for simulated data; the mean counts per pattern for "
        "counts data; an `nphotons` array in an amplitude NPZ; else 1e9",
        checks=(gt(0),),
    )
    calibrate_probe: int = setting(
        0,
        doc="Before training, refine object and probe from a flat object against every "
        "training pattern for this many passes (the refinement engine of [refine]), and train "
        "with the probe found: at gridsize 1 training cannot correct a wrong probe; 0 = off.",
        unit="passes",
        checks=(ge(0),),
    )
    optimizer: Optimizer = setting("adam", doc="Optimizer.")
    learning_rate: float = setting(1e-3, doc="Learning rate.", checks=(gt(0),))
    weight_decay: float = setting(0.0, doc="Weight decay.", checks=(ge(0),))
    momentum: float | Literal["auto"] | None = setting(
        AUTO, doc="SGD momentum.", auto='0.9 with sgd, "none" otherwise', checks=(ge(0), lt(1))
    )
    adam_beta1: float | Literal["auto"] | None = setting(
        AUTO, doc="Adam β1.", auto='0.9 with adam/adamw, "none" otherwise', checks=(ge(0), lt(1))
    )
    adam_beta2: float | Literal["auto"] | None = setting(
        AUTO, doc="Adam β2.", auto='0.999 with adam/adamw, "none" otherwise', checks=(ge(0), lt(1))
    )
    warmup_steps: int | Literal["auto"] = setting(
        AUTO,
        doc="Linear learning-rate warm-up over the first optimizer steps, on top of the "
        "scheduler; 0 disables.",
        auto="10 with adam/adamw, 0 with sgd or the warmup_cosine scheduler",
        checks=(ge(0),),
    )
    scheduler: Scheduler = setting(
        "constant",
        doc="Learning-rate schedule.",
        value_aliases={
            "Default": "constant",
            "ReduceLROnPlateau": "plateau",
            "Exponential": "exponential",
            "WarmupCosine": "warmup_cosine",
        },
    )
    plateau_factor: float | Literal["auto"] | None = setting(
        AUTO,
        doc="plateau: LR multiplier on a plateau.",
        auto='0.5 with plateau, else "none"',
        checks=(gt(0), lt(1)),
    )
    plateau_patience: int | Literal["auto"] | None = setting(
        AUTO,
        doc="plateau: epochs without improvement.",
        auto='2 with plateau, else "none"',
        checks=(ge(0),),
    )
    plateau_min_lr: float | Literal["auto"] | None = setting(
        AUTO,
        doc="plateau: lower bound of the LR.",
        auto='5e-5 with plateau, else "none"',
        checks=(ge(0),),
    )
    plateau_threshold: float | Literal["auto"] | None = setting(
        AUTO,
        doc="plateau: relative improvement that counts.",
        auto='0 with plateau, else "none"',
        checks=(ge(0),),
    )
    exponential_gamma: float | Literal["auto"] | None = setting(
        AUTO,
        doc="exponential: LR multiplier per epoch.",
        auto='0.95 with exponential, else "none"',
        checks=(gt(0), le(1)),
    )
    warmup_epochs: int | Literal["auto"] | None = setting(
        AUTO,
        doc="warmup_cosine: linear warm-up epochs.",
        auto='1 with warmup_cosine, else "none"',
        checks=(ge(0),),
    )
    min_lr_ratio: float | Literal["auto"] | None = setting(
        AUTO,
        doc="warmup_cosine: final LR as a fraction of learning_rate.",
        auto='0.1 with warmup_cosine, else "none"',
        checks=(ge(0), le(1)),
    )
    gradient_clip_val: float | None = setting(
        None, doc="Clip gradients at this value; none disables.", checks=(gt(0),)
    )
    gradient_clip_algorithm: ClipAlgorithm | Literal["auto"] | None = setting(
        AUTO, doc='"norm" or "value".', auto='"norm" when gradient_clip_val is set, else "none"'
    )


# --- [inference] ------------------------------------------------------------------------------


@frozen
class Inference:
    """Reconstruction of the test set from a trained model."""

    bundle: str | None = setting(
        None,
        doc='Model bundle (required when run.task = "infer"); the model configuration comes '
        "only from the lock inside it.",
    )
    batch_size: int | Literal["auto"] = setting(
        AUTO,
        doc="Samples per inference batch.",
        auto="training.batch_size, or 64 for infer",
        checks=(ge(1),),
    )
    stitch: Stitch = setting(
        "position",
        doc='Position-aware shift-and-average stitching: "position" weights every kept patch '
        'pixel equally, "probe" by the intensity of the model\'s (masked) probe there, so '
        "dimly lit pixels count less.",
    )
    align_patches: bool = setting(
        True,
        doc="Before averaging, rotate each predicted patch's global phase to agree with its "
        "overlapping neighbours (angular synchronization over the overlap graph): a far-field "
        "amplitude cannot see a patch's constant phase, and unaligned patches draw the tile grid.",
    )
    trim: int | Literal["auto"] = setting(
        AUTO,
        doc="Pixels cut from each side of a patch before stitching.",
        unit="px",
        auto="N/4",
        checks=(ge(0),),
    )


# --- [refine] ---------------------------------------------------------------------------------


@frozen
class Refine:
    """Physics refinement of the stitched reconstruction against the measured patterns."""

    iterations: int = setting(
        0,
        doc="Physics refinement after the PINN's stitched reconstruction: passes (epochs) over "
        "every measured pattern of the reconstructed scan, maximizing their likelihood over the "
        "whole object; 0 = off.",
        checks=(ge(0),),
    )
    probe: bool = setting(False, doc="Refine the probe too, starting from the data's probe.")
    positions: bool = setting(False, doc="Refine the scan positions too.")
    batch_size: int = setting(
        32,
        doc="Patterns per refinement update (also in training.calibrate_probe).",
        unit="patterns",
        checks=(ge(1),),
    )


# --- [execution] ------------------------------------------------------------------------------


@frozen
class Execution:
    """How the run executes. Only precision, deterministic and cpu_threads may change numerics
    (cpu_threads in the last bits of CPU results: a reduction split over more threads adds in
    another order)."""

    accelerator: Accelerator | Literal["auto"] = setting(
        AUTO,
        doc="Device type.",
        value_aliases=dict(ACCELERATOR_ALIASES),
        auto="cuda if the compiling host has a CUDA GPU and a CUDA "
        "build of torch, mps on Apple silicon, else cpu",
    )
    devices: int | Literal["auto"] = setting(
        1,
        doc="Devices per node.",
        auto="every device of the accelerator on the compiling host",
        checks=(ge(1),),
    )
    num_nodes: int = setting(
        1, doc="Nodes (Lightning DDP over SLURM or torchrun).", checks=(ge(1),)
    )
    strategy: Strategy | Literal["auto"] = setting(
        AUTO,
        doc="Distribution strategy.",
        auto='"single_device" for one process in all, "ddp" for more',
    )
    precision: Precision = setting("32-true", doc="Numeric precision (changes numerics).")
    deterministic: bool | Literal["warn"] = setting(
        True, doc='Deterministic algorithms; "warn" only warns on non-deterministic ones.'
    )
    matmul_precision: MatmulPrecision = setting(
        "highest", doc="torch.set_float32_matmul_precision."
    )
    compile: bool = setting(False, doc="torch.compile the generator.")
    cpu_threads: int | Literal["auto"] | None = setting(
        AUTO,
        doc="Intra-op CPU threads of each process (torch.set_num_threads). Pinned because it "
        "changes the last bits of CPU results; none leaves torch's default for the host.",
        auto="OMP_NUM_THREADS if set on the compiling host, else the CPUs the compiling process "
        "may use, divided among the devices of a CPU run",
        checks=(ge(1),),
    )
    num_workers: int = setting(0, doc="DataLoader worker processes.", checks=(ge(0),))
    pin_memory: bool = setting(False, doc="DataLoader pin_memory.")
    persistent_workers: bool = setting(False, doc="Keep DataLoader workers between epochs.")
    prefetch_factor: int | None = setting(
        None, doc="Batches prefetched per worker.", checks=(ge(1),)
    )
    accumulate_grad_batches: int = setting(1, doc="Batches per optimizer step.", checks=(ge(1),))
    enable_progress_bar: bool | Literal["auto"] = setting(
        AUTO, doc="Progress bars.", auto="true when the compiling process has a terminal"
    )
    enable_checkpointing: bool = setting(True, doc="Write checkpoints.")
    checkpoint_save_top_k: int = setting(
        1, doc="Best checkpoints kept; -1 keeps all.", checks=(ge(-1),)
    )
    checkpoint_monitor: str = setting(
        AUTO,
        doc="Metric that ranks checkpoints (and that early stopping watches); must be one the "
        "run logs: train_loss, train_TERM for each loss term weighted above 0 (poisson, mae, tv; "
        "supervised for a supervised model), the same with val_ when validation groups are held "
        "out, and lr.",
        auto='"val_loss" when round(val_fraction · n_groups) ≥ 1 validation groups are held out, '
        'else "train_loss"',
    )
    checkpoint_mode: CheckpointMode = setting("min", doc="Whether lower or higher is better.")
    checkpoint_save_last: bool = setting(True, doc="Also keep last.ckpt.")
    checkpoint_every_n_steps: int | None = setting(
        None, doc="Also checkpoint every n optimizer steps (for long epochs).", checks=(ge(1),)
    )
    early_stop_patience: int | None = setting(
        None,
        doc="Stop after this many epochs without improvement of checkpoint_monitor.",
        checks=(ge(1),),
    )
    logger: Logger = setting("csv", doc="Metrics logger.")
    log_every_n_steps: int = setting(50, doc="Logging interval in steps.", checks=(ge(1),))


# --- the whole spec and the resolved run ------------------------------------------------------


@frozen
class Spec:
    """A run spec file, after its layers are merged and before resolution."""

    spec_version: int = setting(SPEC_VERSION, doc="Spec format version (required in files).")
    extends: tuple[str, ...] = setting(
        (), doc="Base specs merged under this one, in order; paths relative to this file."
    )
    run: Run = section(Run, doc="Run identity.")
    data: Data = section(Data, doc="Input data.")
    model: Model = section(Model, doc="Generator and physics.")
    training: Training = section(Training, doc="Optimization.")
    inference: Inference = section(Inference, doc="Reconstruction.")
    refine: Refine = section(Refine, doc="Physics refinement of the reconstruction.")
    execution: Execution = section(Execution, doc="Execution (how, not what).")


@frozen
class Canonical:
    """What is computed: identical canonical settings give identical mathematics."""

    run: Run = section(Run, doc="Run identity.")
    seeds: Seeds = section(Seeds, doc="Derived seeds.")
    data: Data = section(Data, doc="Input data.")
    model: Model = section(Model, doc="Generator and physics.")
    training: Training = section(Training, doc="Optimization.")
    inference: Inference = section(Inference, doc="Reconstruction.")
    refine: Refine = section(Refine, doc="Physics refinement of the reconstruction.")


@frozen
class Resolved:
    """A fully resolved run: no field holds "auto"."""

    canonical: Canonical
    execution: Execution


SPEC_SECTIONS: Final = ("run", "data", "model", "training", "inference", "refine", "execution")
