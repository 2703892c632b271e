"""Hypothesis strategies and small builders shared by the spec compiler's tests.

Specs are drawn as nested dicts that are valid by construction (every cross-field rule
respected), so properties can assert on compilation results rather than filter them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tomli_w
from hypothesis import strategies as st

from ptycho_spec.compile import compile_run
from ptycho_spec.errors import Origin
from ptycho_spec.facts import DataFile, HostFacts, InputFacts, ScanFacts
from ptycho_spec.load import Layer, default_layer, env_layer, loads_spec, set_layer
from ptycho_spec.lock import ArrayInfo, DataInput, Environment, Lock
from ptycho_spec.resolve import raster_count, split_counts

SPEC_DIR = "/virtual/specs"
SPEC_PATH = f"{SPEC_DIR}/spec.toml"
TRAIN_NPZ = f"{SPEC_DIR}/train.npz"
N_TRAIN_PATTERNS = 1200

HOST = HostFacts(
    cwd="/virtual/cwd",
    accelerator="cpu",
    device_count=1,
    terminal=False,
    installed=frozenset({"mlflow"}),
    environment=Environment(python="3.11.0", platform="test-platform", numpy="2.0.0"),
)


# --- builders ---------------------------------------------------------------------------------


def toml(tree: Mapping[str, Any]) -> str:
    """TOML text of a spec tree (``spec_version`` added when missing)."""
    return tomli_w.dumps({"spec_version": 1, **tree})


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, table by table."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out.get(key, {}), value) if isinstance(value, Mapping) else value
    return out


def toml_value(value: Any) -> str:
    """A value in TOML syntax, as environment variables and ``--set`` take it."""
    return tomli_w.dumps({"v": value}).split(" = ", 1)[1].strip()


def layers_for(
    text: str,
    *,
    source: str = SPEC_PATH,
    bases: Sequence[tuple[str, str]] = (),
    environ: Mapping[str, str] | None = None,
    sets: Sequence[str] = (),
) -> list[Layer]:
    """Layers of a spec given as text; ``bases`` are (source, text) of extends layers."""
    layers = [default_layer(), *(loads_spec(t, source=s, kind="extends") for s, t in bases)]
    layers.append(loads_spec(text, source=source))
    layers += [x for x in (env_layer(environ or {}), set_layer(sets)) if x is not None]
    return layers


def compile_text(
    text: str, facts: InputFacts | None = None, host: HostFacts = HOST, **kwargs: Any
) -> Lock:
    """Compile spec text (no files: data facts are given) on the fixed test host."""
    return compile_run(layers_for(text, **kwargs), facts or InputFacts(), host)


def scan_facts(
    *,
    path: str = TRAIN_NPZ,
    role: str = "train",
    side: int = 64,
    n_patterns: int = N_TRAIN_PATTERNS,
    measurement: str = "amplitude",
    mean_counts: float | None = None,
    nphotons: float | None = None,
    has_object: bool = False,
    central_share: float = 1.0,
) -> DataFile:
    """Facts of a diffraction NPZ, without a file; ``central_share``: of the probe's intensity
    on the central N/2 box."""
    arrays = {
        "diff3d": ArrayInfo(shape=(n_patterns, side, side), dtype="float32"),
        "probeGuess": ArrayInfo(shape=(side, side), dtype="complex64"),
        "xcoords": ArrayInfo(shape=(n_patterns,), dtype="float64"),
        "ycoords": ArrayInfo(shape=(n_patterns,), dtype="float64"),
    }
    scan = ScanFacts(
        n_patterns=n_patterns,
        measurement=measurement,
        mean_counts=mean_counts,
        nphotons=nphotons,
        has_object=has_object,
    )
    entry = DataInput(role=role, path=path, sha256="sha256:" + "0" * 64, size=1234, arrays=arrays)
    return DataFile(input=entry, probe_side=side, probe_central_share=central_share, scan=scan)


def write_scan_npz(
    path: Any,
    *,
    n_patterns: int = 12,
    side: int = 64,
    counts: bool = False,
    probe_shape: tuple[int, ...] | None = None,
    **extra: Any,
) -> None:
    """A small NPZ in the PtychoPINN data contract (diff3d, xcoords, ycoords, probeGuess)."""
    rng = np.random.default_rng(0)
    patterns = rng.poisson(3.0, (n_patterns, side, side)).astype(np.float32)
    diff3d = patterns if counts else np.sqrt(patterns) + np.float32(0.25)
    arrays = {
        "diff3d": diff3d,
        "xcoords": rng.random(n_patterns),
        "ycoords": rng.random(n_patterns),
        "probeGuess": np.ones(probe_shape or (side, side), np.complex64),
    }
    np.savez(path, **{**arrays, **extra})


def origin_layer(lock: Lock, key: str) -> str:
    """The provenance layer of a setting in a lock."""
    return lock.provenance[key].layer


# --- spec strategies --------------------------------------------------------------------------

_FLOATS = {"allow_nan": False, "allow_infinity": False}


def _maybe(draw: Any, tree: dict[str, Any], key: str, values: st.SearchStrategy[Any]) -> None:
    """Set ``key`` to a drawn value, or leave it out (the default applies)."""
    if draw(st.booleans()):
        tree[key] = draw(values)


@st.composite
def run_tables(draw: Any) -> dict[str, Any]:
    run: dict[str, Any] = {"task": draw(st.sampled_from(["train", "train+infer"]))}
    _maybe(draw, run, "seed", st.integers(0, 2**31))
    _maybe(draw, run, "name", st.sampled_from(["auto", "alpha", "run-1"]))
    _maybe(draw, run, "output_dir", st.sampled_from(["runs/{name}", "out/{name}/x", "/abs/out"]))
    return run


@st.composite
def simulated_data(draw: Any, task: str, n: int) -> dict[str, Any]:
    step_train, step_test = draw(st.integers(2, 10)), draw(st.integers(4, 12))
    size = draw(st.integers(n + max(step_train, step_test), n + 40))
    objects = draw(st.integers(1, 2))
    simulate: dict[str, Any] = {
        "object_size": size,
        "scan_step_train": step_train,
        "scan_step_test": step_test,
        "n_train_objects": objects,
    }
    _maybe(draw, simulate, "nphotons", st.floats(1e3, 1e10, **_FLOATS))
    if task == "train+infer":
        simulate["n_test_objects"] = draw(st.integers(1, 2))
    available = raster_count(size, n, step_train, objects)
    groups = draw(st.one_of(st.just("all"), st.integers(1, available)))
    return {"source": "simulate", "n_groups": groups, "simulate": simulate}


@st.composite
def npz_data(draw: Any, task: str) -> dict[str, Any]:
    data: dict[str, Any] = {"source": "npz", "train_file": "train.npz"}
    if task == "train+infer":
        data["test_fraction"] = draw(st.floats(0.05, 0.5, **_FLOATS))
    data["n_groups"] = draw(st.one_of(st.just("all"), st.just("auto"), st.integers(1, 300)))
    _maybe(draw, data, "measurement", st.just("auto"))
    _maybe(draw, data, "sequential_sampling", st.booleans())
    return data


@st.composite
def model_tables(draw: Any, gridsize: int) -> dict[str, Any]:
    model: dict[str, Any] = {"gridsize": gridsize}
    _maybe(draw, model, "N", st.sampled_from(["auto", 64]))
    _maybe(
        draw,
        model,
        "object_big",
        st.sampled_from(["auto", True, False] if gridsize > 1 else ["auto", False]),
    )
    _maybe(draw, model, "n_filters_scale", st.integers(1, 3))
    _maybe(draw, model, "amp_activation", st.sampled_from(["sigmoid", "silu", "softplus", "relu"]))
    _maybe(draw, model, "probe_mask", st.booleans())
    _maybe(draw, model, "probe_scale", st.floats(0.1, 10, **_FLOATS))
    _maybe(draw, model, "gaussian_smoothing_sigma", st.floats(0, 2, **_FLOATS))
    pad = draw(st.booleans())
    model["pad_object"] = pad
    model["probe_big"] = draw(st.booleans()) if pad else False
    return model


_OPTIMIZER_VALUES = {
    "momentum": st.floats(0, 0.99, **_FLOATS),
    "adam_beta1": st.floats(0, 0.99, **_FLOATS),
    "adam_beta2": st.floats(0.5, 0.9999, **_FLOATS),
}
_SCHEDULER_VALUES = {
    "plateau": {
        "plateau_factor": st.floats(0.1, 0.9, **_FLOATS),
        "plateau_patience": st.integers(0, 5),
    },
    "exponential": {"exponential_gamma": st.floats(0.5, 1.0, **_FLOATS)},
    "warmup_cosine": {
        "warmup_epochs": st.integers(0, 3),
        "min_lr_ratio": st.floats(0, 1, **_FLOATS),
    },
    "constant": {},
}


@st.composite
def training_tables(draw: Any) -> dict[str, Any]:
    optimizer = draw(st.sampled_from(["adam", "adamw", "sgd"]))
    scheduler = draw(st.sampled_from(list(_SCHEDULER_VALUES)))
    training: dict[str, Any] = {"optimizer": optimizer, "scheduler": scheduler}
    _maybe(draw, training, "nepochs", st.integers(1, 200))
    _maybe(draw, training, "batch_size", st.integers(1, 128))
    _maybe(draw, training, "val_fraction", st.sampled_from([0.0, 0.05, 0.2]))
    _maybe(draw, training, "loss", st.sampled_from(["poisson", "mae"]))
    _maybe(draw, training, "learning_rate", st.floats(1e-6, 1e-1, **_FLOATS))
    _maybe(draw, training, "warmup_steps", st.integers(0, 50))
    _maybe(draw, training, "realspace_weight", st.floats(0, 1, **_FLOATS))
    users = {"momentum": ("sgd",), "adam_beta1": ("adam", "adamw"), "adam_beta2": ("adam", "adamw")}
    for name, values in _OPTIMIZER_VALUES.items():
        _maybe(
            draw,
            training,
            name,
            st.one_of(st.just("auto"), values)
            if optimizer in users[name]
            else st.sampled_from(["auto", "none"]),
        )
    for name, values in _SCHEDULER_VALUES[scheduler].items():
        _maybe(draw, training, name, st.one_of(st.just("auto"), values))
    clip = draw(st.one_of(st.just("none"), st.floats(0.1, 10, **_FLOATS)))
    training["gradient_clip_val"] = clip
    if clip != "none":
        _maybe(
            draw, training, "gradient_clip_algorithm", st.sampled_from(["auto", "norm", "value"])
        )
    return training


@st.composite
def execution_tables(draw: Any, monitors: Sequence[str]) -> dict[str, Any]:
    """An execution table whose checkpoint monitor, if set, is one of ``monitors``."""
    devices, nodes = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    strategies = (
        ["auto", "single_device"] if devices * nodes == 1 else ["auto", "ddp", "ddp_spawn", "fsdp"]
    )
    execution: dict[str, Any] = {"accelerator": "cpu", "devices": devices, "num_nodes": nodes}
    _maybe(draw, execution, "strategy", st.sampled_from(strategies))
    _maybe(draw, execution, "precision", st.sampled_from(["32-true", "64-true", "bf16-mixed"]))
    _maybe(draw, execution, "deterministic", st.sampled_from([True, False, "warn"]))
    workers = draw(st.integers(0, 3))
    execution["num_workers"] = workers
    if workers:
        _maybe(draw, execution, "persistent_workers", st.booleans())
        _maybe(draw, execution, "prefetch_factor", st.integers(1, 4))
    _maybe(draw, execution, "checkpoint_monitor", st.sampled_from(["auto", *monitors]))
    _maybe(draw, execution, "logger", st.sampled_from(["csv", "none", "mlflow"]))
    _maybe(draw, execution, "enable_progress_bar", st.sampled_from(["auto", True, False]))
    _maybe(draw, execution, "accumulate_grad_batches", st.integers(1, 4))
    return execution


@st.composite
def spec_trees(draw: Any) -> dict[str, Any]:
    """A valid spec v1 tree: simulated data, or an NPZ whose facts :func:`facts_for` gives."""
    run = draw(run_tables())
    data = draw(st.one_of(simulated_data(run["task"], 64), npz_data(run["task"])))
    # each group draws from neighbor_count *other* patterns of the training and the test scan
    neighbours = min(_scan_patterns(run, data)) - 1
    gridsize = draw(st.integers(1, 2)) if neighbours >= 4 else 1
    if gridsize > 1:
        _maybe(
            draw,
            data,
            "neighbor_count",
            st.one_of(st.just("auto"), st.integers(4, min(8, neighbours))),
        )
    training = draw(training_tables())
    tree = {
        "run": run,
        "data": data,
        "model": draw(model_tables(gridsize)),
        "training": training,
        "execution": draw(execution_tables(_monitors(training, _training_groups(run, data)))),
    }
    inference: dict[str, Any] = {}
    _maybe(draw, inference, "batch_size", st.one_of(st.just("auto"), st.integers(1, 64)))
    _maybe(draw, inference, "trim", st.one_of(st.just("auto"), st.integers(0, 16)))
    _maybe(draw, inference, "align_patches", st.booleans())
    refine = draw(refine_tables(run["task"]))
    return (
        tree
        | ({"inference": inference} if inference else {})
        | ({"refine": refine} if refine else {})
    )


def _scan_patterns(run: Mapping[str, Any], data: Mapping[str, Any]) -> list[int]:
    """The patterns of the training scan and (train+infer) the test scan of a drawn spec."""
    if data["source"] == "simulate":
        sim = data["simulate"]
        counts = [
            raster_count(sim["object_size"], 64, sim["scan_step_train"], sim["n_train_objects"])
        ]
        if run["task"] != "train":
            counts.append(
                raster_count(sim["object_size"], 64, sim["scan_step_test"], sim["n_test_objects"])
            )
        return counts
    fraction = data.get("test_fraction")
    return (
        [N_TRAIN_PATTERNS] if fraction is None else list(split_counts(N_TRAIN_PATTERNS, fraction))
    )


def _training_groups(run: Mapping[str, Any], data: Mapping[str, Any]) -> int:
    """The training groups of a drawn spec: n_groups, or what "all" and "auto" resolve to."""
    groups = data["n_groups"]
    if isinstance(groups, int):
        return groups
    if data["source"] == "simulate":
        sim = data["simulate"]
        return raster_count(sim["object_size"], 64, sim["scan_step_train"], sim["n_train_objects"])
    if groups == "auto":
        return 512
    fraction = data.get("test_fraction")
    return N_TRAIN_PATTERNS if fraction is None else split_counts(N_TRAIN_PATTERNS, fraction)[0]


def _monitors(training: Mapping[str, Any], n_groups: int) -> list[str]:
    """The metrics a drawn training table logs (written out here, not taken from the code
    under test): the loss and the data term per stage, validation only when a group is held
    out, and the learning rate."""
    term = "mae" if training.get("loss") == "mae" else "poisson"
    stages = ["train"] + (["val"] if round(training.get("val_fraction", 0.05) * n_groups) else [])
    return [f"{stage}_{name}" for stage in stages for name in ("loss", term)] + ["lr"]


@st.composite
def refine_tables(draw: Any, task: str) -> dict[str, Any]:
    """Refinement only where there is a reconstruction; its options only when it runs."""
    refine: dict[str, Any] = {}
    if task == "train":
        return refine
    _maybe(draw, refine, "iterations", st.integers(0, 3))
    if refine.get("iterations", 0) > 0:
        _maybe(draw, refine, "probe", st.booleans())
        _maybe(draw, refine, "positions", st.booleans())
        _maybe(draw, refine, "batch_size", st.integers(1, 64))
    return refine


@st.composite
def spec_cases(draw: Any) -> tuple[dict[str, Any], InputFacts]:
    """A valid spec tree with the input facts it compiles against."""
    tree = draw(spec_trees())
    return tree, facts_for(tree, draw(st.sampled_from(["amplitude", "counts"])))


def facts_for(tree: Mapping[str, Any], measurement: str = "amplitude") -> InputFacts:
    if tree["data"]["source"] != "npz":
        return InputFacts()
    counts = 2000.0 if measurement == "counts" else None
    return InputFacts(files=(scan_facts(measurement=measurement, mean_counts=counts),))


def origin_free(kind: str, detail: str) -> Any:
    """An origin function for layers built from dicts: no line numbers, so key order is moot."""
    return lambda _path: Origin(
        kind, file=None if kind not in ("spec", "extends") else SPEC_PATH, detail=detail or None
    )


# --- degenerate data ----------------------------------------------------------------------------

DEGENERATE_N = 64


def degenerate_probe(kind: str) -> np.ndarray:
    """A 64 × 64 probe: lit (flat or a disk), or degenerate (zero, below float32 resolution,
    lit only on its border, or holding a NaN)."""
    n = DEGENERATE_N
    r = np.hypot(*np.meshgrid(np.arange(n) - n / 2, np.arange(n) - n / 2))
    probe = {
        "flat": np.ones((n, n)),
        "disk": (r < n / 4).astype(float),
        "zero": np.zeros((n, n)),
        "tiny": np.full((n, n), 1e-42),
        "border": (r > 0.45 * n).astype(float),
        "nan": np.where(r < 2, np.nan, 1.0),
    }[kind]
    return probe.astype(np.complex64)


def degenerate_patterns(kind: str, m: int, counts: bool) -> np.ndarray:
    """``(M, 64, 64)`` patterns: Poisson counts (or their amplitudes), or degenerate ones."""
    rng = np.random.default_rng(m)
    values = rng.poisson(3.0, (m, DEGENERATE_N, DEGENERATE_N)).astype(np.float32)
    if kind == "zero":
        values[:] = 0
    elif kind == "zero in the first half":
        values[: max(1, m // 2)] = 0
    elif kind == "constant":
        values[:] = 2
    elif kind == "nan":
        values[0, 5, 5] = np.nan
    return values if counts else np.sqrt(values)


def degenerate_positions(kind: str, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) px of M patterns: a line scan 6 px apart, or degenerate positions."""
    x, y = 40.0 + 6.0 * np.arange(m), np.full(m, 40.0)
    if kind == "constant":
        x[:] = 40.0
    elif kind == "duplicated":
        x[1::2] = x[::2][: len(x[1::2])]
    elif kind == "outlier":
        x[-1] = 1e7
    elif kind == "nanometres":
        x, y = x * 1e4, (y + np.arange(m)) * 1e4
    elif kind == "metres":
        x, y = x * 1e-8, y * 1e-8
    elif kind == "negative":
        x = x - 1e3
    elif kind == "offset":
        x, y = x + 1e6, y + 1e6
    elif kind == "nan":
        y[0] = np.nan
    return x, y


@st.composite
def degenerate_runs(draw: Any) -> dict[str, Any]:
    """A small NPZ scan (N = 64, 1 to 6 patterns) that is well formed but degenerate in one of
    its probe, patterns, positions or valid pixels (or in none), as ``arrays``; and a one-epoch
    run ``spec`` tree that trains (and maybe reconstructs) on it, with its group count,
    validation split, monitor and gridsize drawn near their limits."""
    m = draw(st.integers(1, 6))
    broken = draw(st.sampled_from(["nothing", "probe", "patterns", "positions", "valid_mask"]))

    def kind(aspect: str, kinds: tuple[str, ...]) -> str:
        return draw(st.sampled_from(kinds if broken == aspect else kinds[:1]))

    x, y = degenerate_positions(kind("positions", DEGENERATE_POSITIONS), m)
    arrays = {
        "diff3d": degenerate_patterns(
            kind("patterns", DEGENERATE_PATTERNS), m, draw(st.booleans())
        ),
        "xcoords": x,
        "ycoords": y,
        "probeGuess": degenerate_probe(kind("probe", DEGENERATE_PROBES)),
    }
    if broken == "valid_mask":
        arrays["valid_mask"] = np.zeros((DEGENERATE_N, DEGENERATE_N), bool)
    task = draw(st.sampled_from(["train", "train+infer"]))
    data: dict[str, Any] = {"source": "npz", "train_file": "scan.npz"}
    data["n_groups"] = draw(st.one_of(st.just("all"), st.integers(1, 6)))
    if task != "train":
        data["test_fraction"] = 0.5
    training = {"nepochs": 1, "batch_size": 2}
    _maybe(draw, training, "val_fraction", st.sampled_from([0.0, 0.5, 0.9]))
    _maybe(draw, training, "realspace_weight", st.just(0.1))
    execution = {"accelerator": "cpu", "enable_progress_bar": False, "logger": "none"}
    monitors = ["val_loss", "train_loss", "train_tv", "val_poisson"]
    _maybe(draw, execution, "checkpoint_monitor", st.sampled_from(monitors))
    model = {"n_filters_scale": 1, "gridsize": draw(st.sampled_from([1, 1, 2]))}
    _maybe(draw, model, "probe_mask", st.booleans())
    spec = {"run": {"task": task}, "data": data, "model": model, "training": training}
    spec["execution"] = execution
    if task != "train":
        spec["inference"] = {"stitch": draw(st.sampled_from(["position", "probe"]))}
    return {"arrays": arrays, "spec": spec}


# The first of each is healthy.
DEGENERATE_PROBES = ("flat", "disk", "zero", "tiny", "border", "nan")
DEGENERATE_PATTERNS = ("poisson", "zero", "zero in the first half", "constant", "nan")
DEGENERATE_POSITIONS = (
    "line",
    "constant",
    "duplicated",
    "outlier",
    "nanometres",
    "metres",
    "negative",
    "offset",
    "nan",
)
