"""Cross-field rules: settings that are valid alone but not together.

Each rule reads a whole ``Spec`` and yields findings; an error names both settings and where
each was set. The rules run twice: on the spec as written (``"auto"`` values skipped, so
``validate`` needs no data) and on the resolved run (everything concrete). Field-local rules
are validators in ``schema.py``; rules that need the data live in the resolver.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, Final

import attrs
from attrs import frozen

from ptycho_spec.convert import show
from ptycho_spec.errors import Origin, SpecIssue
from ptycho_spec.schema import AUTO, Spec
from ptycho_spec.tree import KeyPath, key_path, schema_leaves, value_at
from ptycho_spec.vocabulary import (
    OPTIMIZER_PARAMS,
    SCHEDULER_PARAMS,
    has_validation,
    logged_metrics,
    validation_groups,
)

MULTI_PROCESS_STRATEGIES: Final = ("ddp", "ddp_spawn", "fsdp")
# Loggers whose package is an optional extra of the same name.
OPTIONAL_LOGGERS: Final = ("tensorboard", "mlflow")


@frozen
class Finding:
    """An error, or a warning that does not stop compilation; ``related`` names the other
    settings it was judged from."""

    issue: SpecIssue
    warning: bool = False
    related: tuple[str, ...] = ()

    def concerns(self, paths: Collection[str]) -> bool:
        """Whether any of ``paths`` (dotted keys or tables) is this finding's setting, a related
        one, or named in its message: a rule judging a setting that failed its own check
        (it then holds its default) would be judging the wrong value."""
        named = (self.issue.path, *self.related)
        return any(
            n == p or n.startswith(p + ".") or p in self.issue.message for p in paths for n in named
        )


@frozen
class Context:
    """What the rules consult besides the settings: where each was set, and the host."""

    origin: Callable[[KeyPath], Origin | None]
    explicit: Callable[[KeyPath], bool]  # set by a layer above the built-in defaults
    installed: frozenset[str] = frozenset()  # optional packages present (tensorboard, mlflow)


def check(spec: Spec, ctx: Context) -> list[Finding]:
    """Every finding of every rule."""
    return [finding for rule in RULES for finding in rule(spec, ctx)]


def where(origin: Origin | None) -> str:
    """Short location of an origin: ``spec.toml:12``, ``PTYCHO__X``, ``default``."""
    if origin is None or origin.layer == "default":
        return "default"
    if origin.layer in ("spec", "extends") and origin.file:
        return f"{origin.file}:{origin.line}" if origin.line else origin.file
    if origin.layer in ("env", "set") and origin.detail:
        return origin.detail
    return str(origin)


def _about(spec: Any, ctx: Context, path: str) -> str:
    """``model.gridsize = 1 (spec.toml:4)``: a setting named in another setting's error."""
    return f"{path} = {show(value_at(spec, key_path(path)))} ({where(ctx.origin(key_path(path)))})"


def finding(
    spec: Any,
    ctx: Context,
    path: str,
    message: str,
    *others: str,
    warning: bool = False,
    at: Origin | None = None,
) -> Finding:
    """A finding at ``path`` (located at ``at``, else where ``path`` was set); ``others`` are
    the related settings, shown with their values and locations."""
    context = "; ".join(_about(spec, ctx, o) for o in others)
    text = f"{message} ({context})" if context else message
    return Finding(
        SpecIssue(path=path, message=text, origin=at or ctx.origin(key_path(path))),
        warning,
        related=others,
    )


def _is_set(value: Any) -> bool:
    return value is not None and value != AUTO


# --- the rules ---------------------------------------------------------------------------------


def _source_required(spec: Spec, ctx: Context) -> Iterator[Finding]:
    if spec.data.source is None:
        yield finding(spec, ctx, "data.source", 'is required: "npz", "simulate" or "ptychodus"')


def _neighbors(spec: Spec, ctx: Context) -> Iterator[Finding]:
    gridsize, count = spec.model.gridsize, spec.data.neighbor_count
    if gridsize > 1 and count is None:
        yield finding(
            spec, ctx, "data.neighbor_count", "is needed when gridsize > 1", "model.gridsize"
        )
    elif gridsize > 1 and isinstance(count, int) and count < gridsize**2:
        msg = f"must be ≥ gridsize² = {gridsize**2}"
        yield finding(spec, ctx, "data.neighbor_count", msg, "model.gridsize")
    elif gridsize == 1 and isinstance(count, int):
        msg = 'has no effect with gridsize 1; leave it "auto"'
        yield finding(spec, ctx, "data.neighbor_count", msg, "model.gridsize")


def _object_big(spec: Spec, ctx: Context) -> Iterator[Finding]:
    if spec.model.object_big is True and spec.model.gridsize == 1:
        msg = 'has no effect with gridsize 1 (one patch per sample); leave it "auto"'
        yield finding(spec, ctx, "model.object_big", msg, "model.gridsize")


def _probe_trainable(spec: Spec, ctx: Context) -> Iterator[Finding]:
    """Without the overlap constraint each patch's object can absorb any probe change, so
    training moves the probe but not towards the true one (benchmarks/RESULTS.md, "A
    trainable probe at gridsize 1")."""
    model = spec.model
    if not model.probe_trainable:
        return
    if model.gridsize == 1:
        cause = "model.gridsize"
    elif model.object_big is False:
        cause = "model.object_big"
    else:
        return
    msg = (
        "without the overlap constraint nothing ties the probe to the object; calibrate it "
        "before training (training.calibrate_probe) or refine it after (refine.probe = true)"
    )
    yield finding(spec, ctx, "model.probe_trainable", msg, cause, warning=True)


def _pad_object(spec: Spec, ctx: Context) -> Iterator[Finding]:
    if spec.model.probe_big is True and spec.model.pad_object is False:
        msg = 'has no effect without object padding; leave it "auto"'
        yield finding(spec, ctx, "model.probe_big", msg, "model.pad_object")


def _loader_workers(spec: Spec, ctx: Context) -> Iterator[Finding]:
    execution = spec.execution
    if execution.num_workers == 0 and execution.persistent_workers:
        yield finding(
            spec,
            ctx,
            "execution.persistent_workers",
            "needs worker processes",
            "execution.num_workers",
        )
    if execution.num_workers == 0 and execution.prefetch_factor is not None:
        yield finding(
            spec,
            ctx,
            "execution.prefetch_factor",
            "needs worker processes",
            "execution.num_workers",
        )


def _precision_on_cpu(spec: Spec, ctx: Context) -> Iterator[Finding]:
    if spec.execution.accelerator != "cpu":
        return
    if spec.execution.precision == "16-mixed":
        msg = 'is not supported on the CPU; use "bf16-mixed" or "32-true"'
        yield finding(spec, ctx, "execution.precision", msg, "execution.accelerator")
    elif spec.execution.precision == "bf16-mixed":
        msg = "on the CPU is slow and changes numerics"
        yield finding(spec, ctx, "execution.precision", msg, "execution.accelerator", warning=True)


def _processes(spec: Spec, ctx: Context) -> Iterator[Finding]:
    execution = spec.execution
    if execution.devices == AUTO:
        return
    processes = execution.devices * execution.num_nodes
    if execution.strategy in MULTI_PROCESS_STRATEGIES and processes == 1:
        msg = "with a single process; it only adds start-up cost"
        yield finding(
            spec,
            ctx,
            "execution.strategy",
            msg,
            "execution.devices",
            "execution.num_nodes",
            warning=True,
        )
    if execution.strategy == "single_device" and processes > 1:
        msg = f'cannot drive {processes} processes; use "ddp"'
        yield finding(
            spec, ctx, "execution.strategy", msg, "execution.devices", "execution.num_nodes"
        )


def _deterministic_compile(spec: Spec, ctx: Context) -> Iterator[Finding]:
    if spec.execution.deterministic is True and spec.execution.compile:
        msg = "with torch.compile: compiled kernels may not have deterministic variants"
        yield finding(spec, ctx, "execution.deterministic", msg, "execution.compile", warning=True)


def _logger_installed(spec: Spec, ctx: Context) -> Iterator[Finding]:
    package = spec.execution.logger
    if package in OPTIONAL_LOGGERS and package not in ctx.installed:
        msg = f'needs the {package} package: pip install "ptycho-spec[{package}]"'
        yield finding(spec, ctx, "execution.logger", msg)


def _training_groups(spec: Spec) -> int | None:
    """The number of training groups, where the spec already says it."""
    n_groups = spec.data.n_groups
    return n_groups if isinstance(n_groups, int) and spec.run.task != "infer" else None


def _checkpoint_monitor(spec: Spec, ctx: Context) -> Iterator[Finding]:
    """The monitor (of checkpoints and early stopping) must be a metric the run logs."""
    monitor, training = spec.execution.checkpoint_monitor, spec.training
    if monitor == AUTO or spec.run.task == "infer":
        return
    n_groups = _training_groups(spec)
    validation = has_validation(training.val_fraction, n_groups)
    if monitor in logged_metrics(training, spec.model, validation=validation):
        return
    if monitor not in logged_metrics(training, spec.model, validation=True):
        logged = ", ".join(logged_metrics(training, spec.model, validation=validation))
        msg = f"must be a metric this run logs: {logged} (got {show(monitor)})"
        yield finding(spec, ctx, "execution.checkpoint_monitor", msg)
    elif training.val_fraction == 0:
        msg = f"{show(monitor)} is not logged without validation data"
        yield finding(spec, ctx, "execution.checkpoint_monitor", msg, "training.val_fraction")
    else:
        msg = f"{show(monitor)} is not logged without validation data: no group is held out"
        yield finding(
            spec, ctx, "execution.checkpoint_monitor", msg, "training.val_fraction", "data.n_groups"
        )


def _validation_split(spec: Spec, ctx: Context) -> Iterator[Finding]:
    """Holding out every group for validation leaves none to train on."""
    n_groups = _training_groups(spec)
    if n_groups is not None and validation_groups(n_groups, spec.training.val_fraction) >= n_groups:
        msg = f"holds out every group ({n_groups} of {n_groups}) for validation: none is left to train on"
        yield finding(spec, ctx, "training.val_fraction", msg, "data.n_groups")


def _task_bundle(spec: Spec, ctx: Context) -> Iterator[Finding]:
    bundle = spec.inference.bundle
    if spec.run.task == "infer" and bundle is None:
        yield finding(
            spec, ctx, "inference.bundle", 'is required when run.task = "infer"', "run.task"
        )
    elif spec.run.task != "infer" and bundle is not None:
        msg = "has no effect: a training task trains its own model"
        yield finding(spec, ctx, "inference.bundle", msg, "run.task")


def _infer_settings(spec: Spec, ctx: Context) -> Iterator[Finding]:
    """An inference-only run takes model and training settings from the bundle's lock."""
    if spec.run.task != "infer":
        return
    for path, _attribute in schema_leaves(Spec):
        if path[0] in ("model", "training") and ctx.explicit(path):
            msg = "comes from the model bundle in an inference-only run; remove it"
            yield finding(spec, ctx, ".".join(path), msg, "run.task")


def _npz_files(spec: Spec, ctx: Context) -> Iterator[Finding]:
    data, task = spec.data, spec.run.task
    if data.source != "npz":
        return
    if task != "infer" and data.train_file is None:
        yield finding(spec, ctx, "data.train_file", "is required to train", "run.task")
    if task != "train" and data.test_file is None and data.test_fraction is None:
        msg = "is required for inference (or data.test_fraction to split the training file)"
        yield finding(spec, ctx, "data.test_file", msg, "run.task")
    if task == "infer" and data.test_file is None and data.train_file is None:
        yield finding(
            spec,
            ctx,
            "data.train_file",
            "is required to split with test_fraction",
            "data.test_fraction",
        )


def _test_split(spec: Spec, ctx: Context) -> Iterator[Finding]:
    if spec.data.test_fraction is not None and spec.data.test_file is not None:
        msg = "has no effect when data.test_file is set; keep one of them"
        yield finding(spec, ctx, "data.test_fraction", msg, "data.test_file")


def _simulate_files(spec: Spec, ctx: Context) -> Iterator[Finding]:
    if spec.data.source != "simulate":
        return
    for name in ("train_file", "test_file", "test_fraction"):
        if getattr(spec.data, name) is not None:
            yield finding(
                spec, ctx, f"data.{name}", "has no effect with simulated data", "data.source"
            )
    if spec.run.task != "train" and spec.data.simulate.n_test_objects == 0:
        msg = "must be ≥ 1: the task reconstructs a test set"
        yield finding(spec, ctx, "data.simulate.n_test_objects", msg, "run.task")


def _ptychodus_files(spec: Spec, ctx: Context) -> Iterator[Finding]:
    """A ptychodus source is a product plus its diffraction file. Their scan is both what is
    trained on (PINN training is self-supervised) and what is reconstructed, unless
    ``data.test_fraction`` holds part of it out; NPZ files have no place beside them."""
    if spec.data.source != "ptychodus":
        return
    for name in ("product_file", "diffraction_file"):
        if getattr(spec.data.ptychodus, name) is None:
            msg = 'is required with data.source = "ptychodus"'
            yield finding(spec, ctx, f"data.ptychodus.{name}", msg, "data.source")
    for name in ("train_file", "test_file"):
        if getattr(spec.data, name) is not None:
            msg = "has no effect: the ptychodus product's scan is the training and test data"
            yield finding(spec, ctx, f"data.{name}", msg, "data.source")


def _foreign_tables(spec: Spec, ctx: Context) -> Iterator[Finding]:
    """``[data.simulate]`` / ``[data.ptychodus]`` settings only act with their own source."""
    defaults = Spec().data
    for table in ("simulate", "ptychodus"):
        if spec.data.source == table:
            continue
        for field in attrs.fields(type(getattr(defaults, table))):
            if getattr(getattr(spec.data, table), field.name) != getattr(
                getattr(defaults, table), field.name
            ):
                msg = f'has no effect unless data.source = "{table}"'
                yield finding(spec, ctx, f"data.{table}.{field.name}", msg, "data.source")


def _object_size(spec: Spec, ctx: Context) -> Iterator[Finding]:
    sim, n = spec.data.simulate, spec.model.N
    if spec.data.source != "simulate" or n == AUTO:
        return
    steps = {
        "scan_step_train": spec.run.task != "infer",
        "scan_step_test": spec.run.task != "train",
    }
    for step, used in steps.items():
        if used and sim.object_size < n + getattr(sim, step):
            msg = f"must be ≥ N + {step} = {n + getattr(sim, step)}"
            yield finding(
                spec, ctx, "data.simulate.object_size", msg, "model.N", f"data.simulate.{step}"
            )


def _optimizer_params(spec: Spec, ctx: Context) -> Iterator[Finding]:
    optimizer = spec.training.optimizer
    for name, users in OPTIMIZER_PARAMS.items():
        yield from _applicable(
            spec, ctx, f"training.{name}", optimizer in users, "training.optimizer"
        )


def _scheduler_params(spec: Spec, ctx: Context) -> Iterator[Finding]:
    scheduler = spec.training.scheduler
    for name, params in SCHEDULER_PARAMS.items():
        for param in params:
            yield from _applicable(
                spec, ctx, f"training.{param}", name == scheduler, "training.scheduler"
            )


def _clip_algorithm(spec: Spec, ctx: Context) -> Iterator[Finding]:
    clip = spec.training.gradient_clip_val is not None
    yield from _applicable(
        spec, ctx, "training.gradient_clip_algorithm", clip, "training.gradient_clip_val"
    )


def _applicable(
    spec: Spec, ctx: Context, path: str, applies: bool, because: str
) -> Iterator[Finding]:
    """A parameter must be unset ("none") where it does nothing, and set where it acts."""
    value = value_at(spec, key_path(path))
    if not applies and _is_set(value):
        yield finding(spec, ctx, path, 'has no effect here; remove it (or set "none")', because)
    elif applies and value is None:
        yield finding(
            spec, ctx, path, 'is needed here; remove it or set a value ("auto" picks one)', because
        )


def _loss_weights(spec: Spec, ctx: Context) -> Iterator[Finding]:
    training = spec.training
    weights = (training.nll_weight, training.mae_weight, training.realspace_weight)
    if AUTO not in weights and sum(weights) == 0:
        msg = "all loss weights are 0: nothing would be optimized"
        yield finding(
            spec,
            ctx,
            "training.nll_weight",
            msg,
            "training.mae_weight",
            "training.realspace_weight",
        )


def _trim(spec: Spec, ctx: Context) -> Iterator[Finding]:
    """Stitching keeps the patch centre left after cutting ``trim`` px from each side."""
    trim, n = spec.inference.trim, spec.model.N
    if isinstance(trim, int) and isinstance(n, int) and spec.run.task != "train" and trim >= n / 2:
        msg = f"must be less than N/2 = {n // 2}: it cuts {trim} px from each side of the patch"
        yield finding(spec, ctx, "inference.trim", msg, "model.N")


def _refine_task(spec: Spec, ctx: Context) -> Iterator[Finding]:
    if spec.refine.iterations > 0 and spec.run.task == "train":
        msg = 'needs a reconstruction to refine; use run.task = "train+infer" or "infer"'
        yield finding(spec, ctx, "refine.iterations", msg, "run.task")


def _refine_options(spec: Spec, ctx: Context) -> Iterator[Finding]:
    """Refinement options other than their defaults only act when refinement runs; the batch
    size also acts in the probe calibration before training."""
    if spec.refine.iterations > 0:
        return
    defaults = Spec().refine
    acting = {"iterations"} | ({"batch_size"} if spec.training.calibrate_probe > 0 else set())
    for field in attrs.fields(type(defaults)):
        if field.name not in acting and getattr(spec.refine, field.name) != getattr(
            defaults, field.name
        ):
            msg = "has no effect without refinement; remove it or set refine.iterations ≥ 1"
            yield finding(spec, ctx, f"refine.{field.name}", msg, "refine.iterations")


RULES: Final[tuple[Callable[[Spec, Context], Iterator[Finding]], ...]] = (
    _source_required,
    _task_bundle,
    _infer_settings,
    _npz_files,
    _test_split,
    _simulate_files,
    _ptychodus_files,
    _foreign_tables,
    _object_size,
    _neighbors,
    _object_big,
    _probe_trainable,
    _pad_object,
    _optimizer_params,
    _scheduler_params,
    _clip_algorithm,
    _loss_weights,
    _trim,
    _refine_task,
    _refine_options,
    _loader_workers,
    _precision_on_cpu,
    _processes,
    _deterministic_compile,
    _logger_installed,
    _validation_split,
    _checkpoint_monitor,
)


def dedupe(findings: list[Finding]) -> list[Finding]:
    """Findings without repeats (the rules run on the spec and on the resolved run)."""
    seen: dict[tuple[str, str, bool], Finding] = {}
    for finding in findings:
        seen.setdefault((finding.issue.path, finding.issue.message, finding.warning), finding)
    return list(seen.values())
