"""Resolution: every ``"auto"`` and every derived value of a spec made concrete.

Pure: reads only the spec, the merged history, the input facts and the host facts. Each step
sets values with their provenance (``inferred`` from a data file, ``derived`` from other
settings, ``host`` from the compiling machine, ``bundle`` from a model bundle's lock) and
reports contradictions as findings; an explicit value is never silently replaced.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any, Final

import attrs
from attrs import define, frozen

from ptycho_spec.convert import show
from ptycho_spec.errors import DataError, Origin
from ptycho_spec.facts import DataFile, HostFacts, InputFacts, InputPaths, ScanFacts
from ptycho_spec.merge import Merged
from ptycho_spec.rules import Context, Finding, finding, where
from ptycho_spec.schema import (
    AUTO,
    SUPPORTED_N,
    Canonical,
    Data,
    Execution,
    Resolved,
    Seeds,
    Spec,
)
from ptycho_spec.tree import KeyPath, dotted, key_path, schema_leaves, value_at
from ptycho_spec.vocabulary import (
    AUTO_WEIGHT_TERM,
    OPTIMIZER_PARAMS,
    SCHEDULER_PARAMS,
    auto_weight,
    has_validation,
    split_counts,
)

DEFAULT_TRAIN_GROUPS: Final = 512
DEFAULT_INFER_BATCH: Final = 64
DEFAULT_NPHOTONS: Final = 1e9
SIMULATED_PROBE_N: Final = 64
# Least share of the probe's intensity on the central N/2 box for a padded object without a
# warning: the disk probe (100 %) and the Siemens star's zone-plate probe (97 %) pass; the LCLS
# probe (72 %) does not (benchmarks/RESULTS.md, "The group canvas and wide probes").
PAD_OBJECT_SHARE: Final = 0.95
# Optimizer steps of linear learning-rate warm-up that "auto" gives Adam and AdamW.
ADAM_WARMUP_STEPS: Final = 10
# Values that "auto" takes for optimizer and scheduler parameters that apply.
PARAM_DEFAULTS: Final = MappingProxyType(
    {
        "momentum": 0.9,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "plateau_factor": 0.5,
        "plateau_patience": 2,
        "plateau_min_lr": 5e-5,
        "plateau_threshold": 0.0,
        "exponential_gamma": 0.95,
        "warmup_epochs": 1,
        "min_lr_ratio": 0.1,
    }
)
# Settings that name files; relative values resolve against the folder of the file that set them.
PATH_FIELDS: Final = (
    ("run", "output_dir"),
    ("data", "train_file"),
    ("data", "test_file"),
    ("data", "simulate", "probe"),
    ("data", "ptychodus", "product_file"),
    ("data", "ptychodus", "diffraction_file"),
    ("inference", "bundle"),
)


@frozen
class Resolution:
    """The resolved run, the provenance of each of its settings, and what went wrong."""

    resolved: Resolved | None  # None when ``findings`` holds errors
    provenance: dict[str, Origin]
    findings: list[Finding]


def derive_seed(seed: int, purpose: str) -> int:
    """A 31-bit seed for one purpose, stable across platforms and Python versions."""
    digest = hashlib.sha256(f"ptycho-spec:{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def raster_count(object_size: int, n: int, step: int, n_objects: int) -> int:
    """Patterns of a simulated raster scan: (⌊(size − N)/step⌋ + 1)² per object."""
    return ((object_size - n) // step + 1) ** 2 * n_objects if object_size >= n else 0


# --- paths ------------------------------------------------------------------------------------


def absolute_paths(spec: Spec, merged: Merged, cwd: str) -> Spec:
    """The spec with every file setting made absolute (``{name}`` is left for resolution)."""
    for path in PATH_FIELDS:
        value = value_at(spec, path)
        if isinstance(value, str):
            spec = evolve_in(spec, path, absolute_path(path, value, folder_of(merged, path, cwd)))
    return spec


def absolute_path(path: KeyPath, value: str, folder: str) -> str:
    """The file setting ``path = value`` made absolute against ``folder``; the simulated
    probe ``"disk"`` names no file and stays."""
    if path[-1] == "probe" and value == "disk":
        return value
    return os.path.normpath(os.path.join(folder, value))


def folder_of(merged: Merged, path: KeyPath, cwd: str) -> str:
    """The folder a relative value at ``path`` is relative to: that of the file that set it
    (the top spec's for a default), or the working directory for variables and ``--set``."""
    origin = merged.origin(path)
    if origin is not None and origin.layer in ("env", "set"):
        return cwd
    name = origin.file if origin is not None and origin.file else None
    layer = next((x for x in merged.layers if name is not None and x.source == name), merged.top)
    if layer is None or layer.source is None:
        return cwd
    absolute = layer.file.path if layer.file is not None else os.path.join(cwd, layer.source)
    return os.path.dirname(absolute)


def input_paths(spec: Spec) -> InputPaths:
    """The files a spec (with absolute paths) makes the compiler read, by role."""
    data = spec.data
    candidates = {
        "train": data.train_file if data.source == "npz" else None,
        "test": data.test_file if data.source == "npz" else None,
        "probe": data.simulate.probe
        if data.source == "simulate" and data.simulate.probe != "disk"
        else None,
        "product": data.ptychodus.product_file if data.source == "ptychodus" else None,
        "diffraction": data.ptychodus.diffraction_file if data.source == "ptychodus" else None,
        "bundle": spec.inference.bundle if spec.run.task == "infer" else None,
    }
    return InputPaths(
        source=data.source, paths={k: v for k, v in candidates.items() if v is not None}
    )


def evolve_in(obj: Any, path: KeyPath, value: Any) -> Any:
    """A copy of nested attrs instances with the value at ``path`` replaced."""
    if len(path) == 1:
        return attrs.evolve(obj, **{path[0]: value})
    return attrs.evolve(obj, **{path[0]: evolve_in(getattr(obj, path[0]), path[1:], value)})


# --- the resolution ---------------------------------------------------------------------------


@define
class _Run:
    """The spec being resolved (local to one :func:`resolve` call)."""

    spec: Spec
    merged: Merged
    facts: InputFacts
    host: HostFacts
    provenance: dict[KeyPath, Origin] = attrs.field(factory=dict)
    findings: list[Finding] = attrs.field(factory=list)

    def get(self, dotted_path: str) -> Any:
        return value_at(self.spec, key_path(dotted_path))

    def auto(self, dotted_path: str) -> bool:
        return bool(self.get(dotted_path) == AUTO)

    def set(self, dotted_path: str, value: Any, origin: Origin) -> None:
        self.spec = evolve_in(self.spec, key_path(dotted_path), value)
        self.provenance[key_path(dotted_path)] = origin

    def origin(self, path: KeyPath) -> Origin | None:
        return self.provenance.get(path) or self.merged.origin(path)

    def error(self, path: str, message: str, *others: str, warning: bool = False) -> None:
        ctx = Context(origin=self.origin, explicit=self.merged.explicit)
        at = self.merged.locate(key_path(path))
        self.findings.append(
            finding(self.spec, ctx, path, message, *others, warning=warning, at=at)
        )

    @property
    def training_task(self) -> bool:
        return self.spec.run.task != "infer"


def _derived(detail: str) -> Origin:
    return Origin("derived", detail=detail)


def resolve(spec: Spec, merged: Merged, facts: InputFacts, host: HostFacts) -> Resolution:
    """Resolve a validated spec against its input facts and the host."""
    run = _Run(spec=absolute_paths(spec, merged, host.cwd), merged=merged, facts=facts, host=host)
    for step in STEPS:
        step(run)
        if any(not f.warning for f in run.findings) and step in _FATAL_AFTER:
            break
    errors = any(not f.warning for f in run.findings)
    resolved = None if errors else _assemble(run)
    provenance = {dotted(p): o for p, o in _provenance(run)} if resolved else {}
    return Resolution(resolved=resolved, provenance=provenance, findings=run.findings)


def _assemble(run: _Run) -> Resolved:
    spec, seed = run.spec, run.spec.run.seed
    seeds = Seeds(**{f.name: derive_seed(seed, f.name) for f in attrs.fields(Seeds)})
    canonical = Canonical(
        run=spec.run,
        seeds=seeds,
        data=spec.data,
        model=spec.model,
        training=spec.training,
        inference=spec.inference,
        refine=spec.refine,
    )
    return Resolved(canonical=canonical, execution=spec.execution)


def _provenance(run: _Run) -> Iterator[tuple[KeyPath, Origin]]:
    seed_origin = _derived(f"run.seed = {run.spec.run.seed}")
    for path, _attribute in schema_leaves(Canonical):
        yield path, seed_origin if path[0] == "seeds" else (run.origin(path) or Origin("default"))
    for path, _attribute in schema_leaves(Execution, ("execution",)):
        yield path, run.origin(path) or Origin("default")


# --- run and bundle ---------------------------------------------------------------------------


def _run_identity(run: _Run) -> None:
    if run.auto("run.name"):
        top = run.merged.top
        stem = os.path.splitext(os.path.basename(top.source))[0] if top and top.source else "run"
        run.set("run.name", stem, _derived("the spec file's stem"))
    output = os.path.normpath(run.get("run.output_dir").replace("{name}", run.spec.run.name))
    run.spec = evolve_in(run.spec, ("run", "output_dir"), output)


def _bundle(run: _Run) -> None:
    """An inference-only run takes model and training settings from the bundle's lock."""
    if run.training_task:
        return
    lock = run.facts.bundle
    if lock is None:
        run.error("inference.bundle", "its lock was not read")
        return
    origin = Origin("bundle", file=run.spec.inference.bundle)
    run.spec = attrs.evolve(
        run.spec, model=lock.resolved.canonical.model, training=lock.resolved.canonical.training
    )
    for path, _attribute in schema_leaves(Spec):
        if path[0] in ("model", "training"):
            run.provenance[path] = origin


# --- data facts -------------------------------------------------------------------------------


def _scan_files(run: _Run) -> list[DataFile]:
    """The diffraction files this run reads (train and/or test, or the ptychodus diffraction
    file), as read by facts."""
    data = run.spec.data
    roles = ["train"] if run.training_task or data.test_file is None else []
    roles += ["test"] if run.spec.run.task != "train" and data.test_file is not None else []
    keys = {role: f"data.{role}_file" for role in roles}
    if data.source == "ptychodus":
        keys = {"diffraction": "data.ptychodus.diffraction_file"}
    files = [run.facts.get(role) for role in keys]
    for key, file in zip(keys.values(), files, strict=True):
        if file is None or file.scan is None:
            run.error(key, "the file was not read")
    return [f for f in files if f is not None and f.scan is not None]


def _probe_files(run: _Run) -> list[DataFile]:
    """Every file holding a probe the run uses: NPZ probeGuess, a simulation probe file or a
    ptychodus product's probe (none for the simulated disk probe)."""
    if run.spec.data.source == "npz":
        files = _scan_files(run)
    else:
        probe = run.facts.get("product" if run.spec.data.source == "ptychodus" else "probe")
        files = [probe] if probe is not None else []
    return [f for f in files if f.probe_side is not None]


def _probe_evidence(run: _Run) -> list[tuple[int, str]]:
    """(side, where) of every probe in the data."""
    return [(f.probe_side, f.input.path) for f in _probe_files(run)]


def _model_size(run: _Run) -> None:
    evidence = _probe_evidence(run)
    n = run.spec.model.N
    if n == AUTO and not evidence:
        run.set("model.N", SIMULATED_PROBE_N, _derived("side of the simulated disk probe"))
    elif n == AUTO:
        side, path = evidence[0]
        if side not in SUPPORTED_N:
            run.error(
                "model.N",
                f"probeGuess in {path} is {side}×{side}; N must be one of {', '.join(map(str, SUPPORTED_N))}",
            )
            return
        run.set("model.N", side, Origin("inferred", file=path, detail=f"probeGuess {side}×{side}"))
    for side, path in evidence:
        if side != run.spec.model.N:
            run.error(
                "model.N",
                f"{run.spec.model.N} ({_where(run, 'model.N')}) contradicts probeGuess {side}×{side} ({path})",
            )


def _where(run: _Run, dotted_path: str) -> str:
    return where(run.origin(key_path(dotted_path)))


def _measurement(run: _Run) -> None:
    value = run.spec.data.measurement
    if run.spec.data.source == "simulate":
        if value == "counts":
            msg = 'simulated patterns are amplitudes; leave it "auto"'
            run.error("data.measurement", msg, "data.source")
        _derive(run, "data.measurement", "amplitude", "simulated patterns are amplitudes")
        return
    scans = [f for f in _scan_files(run) if f.scan is not None]
    if len({f.scan.measurement for f in scans if f.scan}) > 1:
        found = ", ".join(f"{f.input.path}: {f.scan.measurement}" for f in scans if f.scan)
        msg = f"the training and test files hold different measurements ({found})"
        raise DataError(msg)
    if not scans or scans[0].scan is None:
        return
    kind, path = scans[0].scan.measurement, scans[0].input.path
    if value not in (AUTO, kind):
        raise DataError(_measurement_message(run, value, kind), path=path)
    if value == AUTO:
        origin = Origin("inferred", file=path, detail=_measurement_why(run, kind))
        run.set("data.measurement", kind, origin)


_MEASUREMENT_WHY: Final = MappingProxyType(
    {
        "counts": "integer-valued diffraction",
        "amplitude": "non-integer diffraction values",
    }
)


def _measurement_why(run: _Run, kind: str) -> str:
    if run.spec.data.source == "ptychodus":
        return "ptychodus patterns are detector counts"
    return _MEASUREMENT_WHY[kind]


def _measurement_message(run: _Run, value: str, kind: str) -> str:
    return f"data.measurement = {show(value)} ({_where(run, 'data.measurement')}) but the file holds {kind} ({_measurement_why(run, kind)})"


def _nphotons(run: _Run) -> None:
    if not run.training_task:
        return
    if run.spec.data.source == "simulate":
        _nphotons_simulated(run)
        return
    scans = [f for f in _scan_files(run) if f.scan is not None]
    if scans and scans[0].scan is not None:
        _nphotons_from_file(run, scans[0].scan, scans[0].input.path)


def _nphotons_simulated(run: _Run) -> None:
    simulated = run.spec.data.simulate.nphotons
    value = run.spec.training.nphotons
    if value == AUTO:
        run.set("training.nphotons", simulated, _derived("data.simulate.nphotons"))
    elif value != simulated:
        run.error(
            "training.nphotons",
            'differs from the simulated photon count; leave it "auto"',
            "data.simulate.nphotons",
        )


def _nphotons_from_file(run: _Run, scan: ScanFacts, path: str) -> None:
    value = run.spec.training.nphotons
    if value != AUTO:
        if scan.nphotons is not None and not math.isclose(value, scan.nphotons, rel_tol=1e-9):
            msg = f"{show(value)} contradicts the nphotons array {scan.nphotons!r} in {path}"
            run.error("training.nphotons", msg)
        return
    run.set("training.nphotons", *_photon_scale(scan, path))


def _photon_scale(scan: ScanFacts, path: str) -> tuple[float, Origin]:
    """Photons per pattern of a file: its mean counts, its nphotons array, else 1e9."""
    if scan.measurement == "counts" and scan.mean_counts is not None:
        return scan.mean_counts, Origin("inferred", file=path, detail="mean counts per pattern")
    if scan.nphotons is not None:
        return scan.nphotons, Origin("inferred", file=path, detail="nphotons array")
    return DEFAULT_NPHOTONS, _derived("default for amplitude data without nphotons")


def _patterns(run: _Run, role: str) -> tuple[int, str] | None:
    """(pattern count, where) available for training (``train``) or testing (``test``)."""
    data, n = run.spec.data, run.spec.model.N
    if data.source == "simulate" and isinstance(n, int):
        sim = data.simulate
        step, objects = (
            (sim.scan_step_train, sim.n_train_objects)
            if role == "train"
            else (sim.scan_step_test, sim.n_test_objects)
        )
        return raster_count(sim.object_size, n, step, objects), f"simulated {role} scans"
    file = run.facts.get(_pattern_role(data, role))
    if file is None or file.scan is None:
        return None
    total = file.scan.n_patterns
    if data.test_fraction is None:
        return total, file.input.path
    n_train, n_test = split_counts(total, data.test_fraction)
    return (
        n_train if role == "train" else n_test
    ), f"{file.input.path} split by data.test_fraction"


def _pattern_role(data: Data, role: str) -> str:
    """The file holding the ``role`` patterns: a ptychodus diffraction file holds both (the
    product's own scan is trained on and reconstructed), a split NPZ its training file."""
    if data.source == "ptychodus":
        return "diffraction"
    return role if data.test_fraction is None else "train"


def _split(run: _Run) -> None:
    """A file that ``data.test_fraction`` splits must leave patterns on both sides."""
    data = run.spec.data
    if data.test_fraction is None or data.source == "simulate":
        return
    file = run.facts.get(_pattern_role(data, "train"))
    if file is None or file.scan is None:
        return
    total = file.scan.n_patterns
    if 0 in split_counts(total, data.test_fraction):
        msg = (
            f"cannot split the {total} pattern of {file.input.path} into training and test patterns"
        )
        run.error("data.test_fraction", msg)


def _group_pool(run: _Run, role: str) -> tuple[int, str] | None:
    """(patterns, where) that groups are drawn from: ``_patterns``, less what
    ``data.n_subsample`` leaves out of the training patterns."""
    available = _patterns(run, role)
    subsample = run.spec.data.n_subsample
    if available is None or role != "train" or subsample is None:
        return available
    count, source = available
    if subsample > count:
        run.error("data.n_subsample", f"{subsample} exceeds the {count} patterns of {source}")
        return None
    return subsample, f"data.n_subsample = {subsample} of {source}"


def _groups(run: _Run) -> None:
    role = "train" if run.training_task else "test"
    available = _group_pool(run, role)
    if available is None:
        return
    count, source = available
    value = run.spec.data.n_groups
    if value == "all" or (value == AUTO and role == "test"):
        run.set("data.n_groups", count, _derived(f"all {count} patterns of {source}"))
    elif value == AUTO:
        run.set("data.n_groups", DEFAULT_TRAIN_GROUPS, _derived("default for training"))
    if run.spec.data.n_groups > count:
        run.error(
            "data.n_groups",
            f'{run.spec.data.n_groups} exceeds the {count} patterns of {source}; set "all" or fewer',
        )


def _supervised_labels(run: _Run) -> None:
    if (
        run.spec.model.model_type != "supervised"
        or run.spec.data.source != "npz"
        or not run.training_task
    ):
        return
    for file in _scan_files(run):
        if file.scan is not None and not file.scan.has_object:
            run.error(
                "model.model_type",
                f'"supervised" needs ground truth (objectGuess) in {file.input.path}',
            )


# --- settings derived from settings -----------------------------------------------------------


def _neighbours(run: _Run) -> None:
    """With gridsize > 1 each group is drawn from a seed's neighbor_count nearest *other*
    patterns, in the training pool and in the test scan."""
    k = run.spec.data.neighbor_count
    if run.spec.model.gridsize == 1 or not isinstance(k, int):
        return
    roles = {"train": run.training_task, "test": run.spec.run.task != "train"}
    for role in (r for r, used in roles.items() if used):
        available = _group_pool(run, role)
        if available is not None and k >= available[0]:
            msg = f"{k} needs more than the {available[0]} patterns of {available[1]}"
            run.error("data.neighbor_count", msg, "model.gridsize")


def _derive(run: _Run, path: str, value: Any, because: str) -> None:
    if run.auto(path):
        run.set(path, value, _derived(because))


def _model_flags(run: _Run) -> None:
    gridsize = run.spec.model.gridsize
    _derive(run, "model.object_big", gridsize > 1, f"model.gridsize = {gridsize}")
    _derive(
        run,
        "data.neighbor_count",
        max(4, gridsize**2) if gridsize > 1 else None,
        f"model.gridsize = {gridsize}",
    )


def _object_padding(run: _Run) -> None:
    """``pad_object`` confines the object to the central N/2 box; a probe that lights more than
    that box leaves light a padded model cannot explain, which the network fits with a phase
    ramp (benchmarks/RESULTS.md, "The group canvas and wide probes"): padding a probe with less
    than ``PAD_OBJECT_SHARE`` of its intensity on the box is kept, with a warning.
    ``probe_big`` follows ``pad_object``."""
    pad = run.spec.model.pad_object
    shares = [
        (f.probe_central_share, f.input.path)
        for f in _probe_files(run)
        if f.probe_central_share is not None
    ]
    if pad and shares and (least := min(shares))[0] < PAD_OBJECT_SHARE:
        share, path = least
        msg = (
            f"probeGuess holds {share:.0%} of its intensity on the central N/2 box ({path}); "
            "a padded object cannot explain the rest"
        )
        run.error("model.pad_object", msg, warning=True)
    _derive(run, "model.probe_big", pad, f"model.pad_object = {show(pad)}")


def _loss_weights(run: _Run) -> None:
    loss = run.spec.training.loss
    for name in AUTO_WEIGHT_TERM:
        _derive(run, f"training.{name}", auto_weight(name, loss), f"training.loss = {loss}")


def _optimizer_params(run: _Run) -> None:
    """The chosen optimizer's parameters get their defaults; the others become none."""
    optimizer = run.spec.training.optimizer
    for name, users in OPTIMIZER_PARAMS.items():
        value = PARAM_DEFAULTS[name] if optimizer in users else None
        _derive(run, f"training.{name}", value, f"training.optimizer = {optimizer}")


def _warmup_steps(run: _Run) -> None:
    """Adam's first steps move every weight by about the full learning rate, whatever its
    gradient, before the moment estimates settle (Liu et al. 2020, "On the variance of the
    adaptive learning rate and beyond"); a short warm-up keeps them from flattening the object
    (benchmarks/RESULTS.md, "Learning-rate warm-up"). ``warmup_cosine`` warms up by itself."""
    training = run.spec.training
    if training.scheduler == "warmup_cosine":
        _derive(run, "training.warmup_steps", 0, "training.scheduler = warmup_cosine")
    else:
        steps = ADAM_WARMUP_STEPS if training.optimizer in ("adam", "adamw") else 0
        _derive(run, "training.warmup_steps", steps, f"training.optimizer = {training.optimizer}")


def _scheduler_params(run: _Run) -> None:
    """The chosen scheduler's parameters get their defaults; the others become none."""
    chosen = run.spec.training.scheduler
    for scheduler, params in SCHEDULER_PARAMS.items():
        for name in params:
            value = PARAM_DEFAULTS[name] if scheduler == chosen else None
            _derive(run, f"training.{name}", value, f"training.scheduler = {chosen}")


def _clip_algorithm(run: _Run) -> None:
    clip = run.spec.training.gradient_clip_val
    value = "norm" if clip is not None else None
    _derive(
        run, "training.gradient_clip_algorithm", value, f"training.gradient_clip_val = {show(clip)}"
    )


def _inference(run: _Run) -> None:
    n = run.spec.model.N
    if isinstance(n, int):
        _derive(run, "inference.trim", n // 4, f"model.N = {n}")
    if run.training_task:
        _derive(run, "inference.batch_size", run.spec.training.batch_size, "training.batch_size")
    else:
        _derive(run, "inference.batch_size", DEFAULT_INFER_BATCH, "default for inference-only runs")


# --- execution on this host -------------------------------------------------------------------


def _accelerator(run: _Run) -> None:
    host = run.host
    if run.auto("execution.accelerator"):
        run.set(
            "execution.accelerator",
            host.accelerator,
            Origin("host", detail=f"{host.accelerator} on the compiling host"),
        )
    accelerator = run.spec.execution.accelerator
    if accelerator != "cpu" and accelerator != host.accelerator:
        run.error(
            "execution.accelerator",
            f"the compiling host has no {accelerator} device; the lock runs only where one is",
            warning=True,
        )
    if run.auto("execution.devices"):
        _devices(run, accelerator)


def _devices(run: _Run, accelerator: str) -> None:
    host = run.host
    if accelerator != "cpu" and accelerator != host.accelerator:
        run.error(
            "execution.devices",
            '"auto" counts devices on the compiling host, which has none; set a number',
            "execution.accelerator",
        )
        return
    count = host.device_count if accelerator == "cuda" else 1
    run.set(
        "execution.devices",
        count,
        Origin("host", detail=f"{count} {accelerator} device(s) on the compiling host"),
    )


def _execution(run: _Run) -> None:
    execution = run.spec.execution
    if isinstance(execution.devices, int):
        processes = execution.devices * execution.num_nodes
        _derive(
            run,
            "execution.strategy",
            "single_device" if processes == 1 else "ddp",
            f"{processes} process(es)",
        )
    if run.auto("execution.cpu_threads"):
        _cpu_threads(run)
    if run.auto("execution.enable_progress_bar"):
        terminal = run.host.terminal
        run.set(
            "execution.enable_progress_bar",
            terminal,
            Origin(
                "host", detail="stderr is a terminal" if terminal else "stderr is not a terminal"
            ),
        )
    _checkpoint_monitor(run)


def _cpu_threads(run: _Run) -> None:
    """The host's threads, shared among the processes of a CPU run on one node."""
    execution, host = run.spec.execution, run.host
    processes = execution.devices if execution.accelerator == "cpu" else 1
    if not isinstance(processes, int):
        return  # devices is unresolved: its own error is already reported
    threads = max(1, host.cpu_threads // processes)
    detail = host.cpu_threads_source + (f", over {processes} processes" if processes > 1 else "")
    run.set("execution.cpu_threads", threads, Origin("host", detail=detail))


def _checkpoint_monitor(run: _Run) -> None:
    """The validation loss where training holds out validation groups, else the training
    loss: the default must be a metric this run logs."""
    fraction, groups = run.spec.training.val_fraction, run.spec.data.n_groups
    n_groups = groups if run.training_task and isinstance(groups, int) and fraction > 0 else None
    validation = has_validation(fraction, n_groups)
    because = f"training.val_fraction = {fraction}"
    if n_groups is not None and not validation:
        because += f" holds out none of data.n_groups = {n_groups}"
    _derive(
        run, "execution.checkpoint_monitor", "val_loss" if validation else "train_loss", because
    )


def _file_notes(run: _Run) -> None:
    for file in run.facts.files:
        for key, message in file.notes:
            run.error(key, message, warning=True)


STEPS: Final[tuple[Callable[[_Run], None], ...]] = (
    _file_notes,
    _run_identity,
    _bundle,
    _model_size,
    _measurement,
    _nphotons,
    _split,
    _groups,
    _supervised_labels,
    _model_flags,
    _object_padding,
    _neighbours,
    _loss_weights,
    _optimizer_params,
    _warmup_steps,
    _scheduler_params,
    _clip_algorithm,
    _inference,
    _accelerator,
    _execution,
)
# After these, later steps would work on values that failed to resolve.
_FATAL_AFTER: Final = frozenset({_bundle, _model_size, _split})
