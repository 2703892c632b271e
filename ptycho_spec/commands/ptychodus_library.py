"""The ptychodus reconstructor library "ptycho-spec": PtychoPINN trained and run by this project
inside ptychodus 1.7.0 (``ptychodus.api.reconstruct``). The only module that imports ptychodus
besides its launcher; part of the command layer, since it compiles the specs it runs.

* ``reconstruct`` turns a ``ReconstructInput`` into a ``Scan`` with ptychodus's own geometry
  (detector counts → amplitude, positions in metres → object pixels, ``bad_pixels`` → the
  valid-pixel mask), runs inference with the loaded model bundle, and yields products whose
  object is the stitched reconstruction in the input object's frame, with progress against
  ``get_progress_goal()`` (percent).
* ``train(input_path, output_path)`` writes a spec for the data in ``input_path`` (ptychodus's
  batch layout ``product.h5`` + ``diffraction.h5``, or a training NPZ), compiles it into a lock
  and runs it through ``runner.run.execute`` — the code of ``ptycho-spec run`` — in a worker
  thread, yielding each epoch's training and validation loss as it comes.
* Models are our ``model.bundle`` files (``runner.train.bundle``: weights loaded with
  ``weights_only=True``); training data are NPZ files in the PtychoPINN contract, amplitudes.

ptychodus 1.7.0 builds its libraries in ``ptychodus.model.core.ModelCore``; there is no plugin
hook for reconstructors. ``ptycho_spec.commands.ptychodus_launch`` starts ptychodus with this library added.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import lightning.pytorch as pl
import numpy as np
import tomli_w
import torch
from attrs import frozen
from ptychodus.api.io import StandardFileLayout
from ptychodus.api.object import Object
from ptychodus.api.product import LossValue, Product
from ptychodus.api.reconstruct import (
    ReconstructInput,
    Reconstructor,
    ReconstructorLibrary,
    ReconstructOutput,
    TrainableReconstructor,
    TrainOutput,
)
from ptychodus.api.settings import SettingsRegistry

from ptycho_spec import atomic
from ptycho_spec.bases import base_spec
from ptycho_spec.compile import compile_spec
from ptycho_spec.errors import DataError, RunError, UsageError
from ptycho_spec.formats import ptychodus as pf
from ptycho_spec.locate import compiled_paths
from ptycho_spec.lock import Lock, loads_lock
from ptycho_spec.schema import ACCELERATOR_ALIASES, Canonical, Execution
from runner.data.npz import write_npz
from runner.data.scan import Scan
from runner.infer.reconstruct import inference_groups, network_input, predict_patches, stitch_groups
from runner.run.execute import execute, net_from_bundle
from runner.train.bundle import Bundle, read_bundle

logger = logging.getLogger(__name__)

LIBRARY_NAME: Final = "ptycho-spec"
PROGRESS_GOAL: Final = 100  # percent, for reconstruction and training alike
PROGRESS_STEPS: Final = 10  # partial reconstructions yielded per reconstruct()
MODEL_EXTENSION: Final = ".bundle"
MODEL_FILE_FILTER: Final = "ptycho-spec Model Bundles (*.bundle)"
TRAINING_DATA_FILE_FILTER: Final = "PtychoPINN NumPy Zipped Archive (*.npz)"
TRAIN_SPEC: Final = "ptycho-spec-train.toml"  # written into output_path; run in its stem
MODEL_TYPES: Final = {"PINN": "pinn", "Supervised": "supervised"}


class PtychoSpecSettings:
    """The library's group ``[PtychoSpec]`` in ptychodus's settings (INI) file.

    ``SpecFile``: a spec that training extends (empty: the defaults of
    ``ptycho_spec/bases/ptychodus.toml``); ``Overrides``: ``section.key=value`` entries
    separated by ``;``, applied like ``--set``; ``Accelerator``: where reconstruction runs,
    ``auto`` (a CUDA GPU when there is one), ``cpu``, ``cuda`` or ``mps``.
    """

    def __init__(self, registry: SettingsRegistry) -> None:
        group = registry.create_group("PtychoSpec")
        self.spec_file = group.create_string_parameter("SpecFile", "")
        self.overrides = group.create_string_parameter("Overrides", "")
        self.accelerator = group.create_string_parameter("Accelerator", "auto")

    def sets(self) -> list[str]:
        return [item.strip() for item in self.overrides.get_value().split(";") if item.strip()]

    def device(self) -> torch.device:
        name = self.accelerator.get_value().strip().lower() or "auto"
        name = ACCELERATOR_ALIASES.get(name, name)
        if name not in ("auto", "cpu", "cuda", "mps"):
            msg = f"[PtychoSpec] Accelerator must be auto, cpu, cuda or mps (got {name!r})"
            raise UsageError(msg)
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(name)


@frozen(kw_only=True)
class LoadedModel:
    """A model bundle as read, with the resolved run it was trained by, and its bytes."""

    bundle: Bundle
    canonical: Canonical
    execution: Execution
    data: bytes


def load_model(path: Path) -> LoadedModel:
    bundle = read_bundle(path)
    resolved = loads_lock(bundle.lock_text, source=f"{path}[lock.toml]").resolved
    return LoadedModel(
        bundle=bundle,
        canonical=resolved.canonical,
        execution=resolved.execution,
        data=path.read_bytes(),
    )


# --- ptychodus objects ↔ scans ----------------------------------------------------------------


def scan_from_input(parameters: ReconstructInput, *, labels: bool) -> Scan:
    """The input's patterns and positions as a ``Scan`` in the product object's pixel frame.

    Checks what ``ptycho_spec.formats.ptychodus`` checks of files (far field, one object layer,
    probe and object on one pixel grid, patterns the probe's size); ``labels`` carries the
    product's object as ``Scan.object`` (supervised training only: it is no ground truth).
    """
    product = parameters.product
    where = f"ptychodus product {product.metadata.name!r}"
    pf.check_far_field(product.metadata.far_field, path=where)
    object_ = product.object_
    pf.object_frame(object_.get_array().shape, object_.dtype, path=where)
    probe_pixels, object_pixels = product.probes.get_pixel_geometry(), object_.get_pixel_geometry()
    pf.check_pixels(
        (probe_pixels.width_m, probe_pixels.height_m),
        (object_pixels.width_m, object_pixels.height_m),
        path=where,
    )
    probe = pf.probe_mode0(product.probes.get_array(), path=where)
    if (note := pf.mode_note(product.probes.get_array())) is not None:
        logger.warning("%s: %s", where, note)
    patterns = np.asarray(parameters.diffraction_patterns)
    pf.check_pattern_size(patterns.shape, probe.shape[-1], path=where)
    if len(patterns) != len(product.probe_positions):
        msg = f"{len(patterns)} patterns for {len(product.probe_positions)} probe positions"
        raise DataError(msg, path=where, key=pf.PATTERNS)
    bad = _bad_pixels(parameters.bad_pixels, patterns.shape[1:])
    geometry = object_.get_geometry()
    positions = product.probe_positions
    return Scan(
        amplitude=pf.counts_to_amplitude(patterns, bad, path=where),
        x_px=geometry.map_probe_positions_to_object_x_px(positions) + pf.PATCH_CENTRE_SHIFT_PX,
        y_px=geometry.map_probe_positions_to_object_y_px(positions) + pf.PATCH_CENTRE_SHIFT_PX,
        probe=probe,
        object=object_.get_layer(0).astype(np.complex64) if labels else None,
        valid_mask=~bad if bad.any() else None,
        source=where,
    )


def _bad_pixels(bad: Any, shape: tuple[int, ...]) -> np.ndarray:
    """ptychodus's mask (True = bad); ``None`` means no bad pixel, as in ``api/io.py``."""
    mask = np.zeros(shape, dtype=bool) if bad is None else np.asarray(bad, dtype=bool)
    if mask.shape != shape:
        msg = f"bad-pixel mask is {mask.shape}, patterns are {shape}"
        raise DataError(msg, key=pf.BAD_PIXELS)
    return mask


def output_product(product: Product, obj: np.ndarray, losses: Sequence[LossValue]) -> Product:
    """``product`` with ``obj`` ``(H, W)`` as its object, in the input object's pixel geometry,
    centre and layer spacing; metadata, positions and probes unchanged."""
    object_ = product.object_
    return Product(
        metadata=product.metadata,
        probe_positions=product.probe_positions,
        probes=product.probes,
        object_=Object(
            array=obj[np.newaxis].astype(object_.dtype),
            pixel_geometry=object_.get_pixel_geometry(),
            center=object_.get_center(),
            layer_spacing_m=list(object_.layer_spacing_m),
        ),
        losses=list(losses),
    )


# --- reconstruction ---------------------------------------------------------------------------


def reconstruct_in_steps(
    model: LoadedModel, scan: Scan, *, canvas_shape: tuple[int, int], device: torch.device
) -> Iterator[tuple[int, np.ndarray]]:
    """(percent done, object stitched from the groups predicted so far), ``PROGRESS_STEPS``
    times; the last is the object ``runner.infer.reconstruct.reconstruct`` stitches for the scan (up to
    rounding: the batches differ). Each step stitches only its own groups and adds them to
    running weighted sums: stitching is a weighted mean."""
    c = model.canonical
    if scan.N != c.model.N:
        msg = f"patterns are {scan.N}×{scan.N} but the model was trained with N = {c.model.N}"
        raise DataError(msg, path=scan.source, key=pf.PATTERNS)
    net = net_from_bundle(c, model.bundle, probe=scan.probe)
    x, _scale = network_input(scan, c.model.N)
    indices = inference_groups(c, scan, n_groups=None)
    bounds = np.linspace(0, len(indices), min(PROGRESS_STEPS, len(indices)) + 1).astype(int)
    weighted, total = np.zeros(canvas_shape, np.complex128), np.zeros(canvas_shape)
    for start, end in itertools.pairwise(bounds):
        patches = predict_patches(
            net,
            x,
            indices[start:end],
            batch_size=c.inference.batch_size,
            device=device,
            precision=model.execution.precision,
            progress=False,
        )
        obj, weight = stitch_groups(
            patches, indices[start:end], scan, c=c, net=net, canvas_shape=canvas_shape
        )
        if c.inference.align_patches:
            obj = obj * _phase_to_match(obj, weight, weighted, total)
        weighted += obj * weight
        total += weight
        covered = total > 0
        so_far = np.where(covered, weighted / np.where(covered, total, 1.0), 0)
        yield round(PROGRESS_GOAL * end / len(indices)), so_far.astype(np.complex64)


def _phase_to_match(
    obj: np.ndarray, weight: np.ndarray, weighted: np.ndarray, total: np.ndarray
) -> complex:
    """e^{iφ} that rotates a step's stitched ``obj`` onto the running sum where both are covered:
    each step's patches are phase-aligned among themselves only, and a far-field amplitude
    leaves a constant phase free."""
    both = (weight > 0) & (total > 0)
    cross = np.sum(np.conj(obj[both]) * weighted[both] * weight[both])
    return complex(np.exp(1j * np.angle(cross))) if cross != 0 else 1.0


# --- training ---------------------------------------------------------------------------------


def training_data(input_path: Path) -> dict[str, Any]:
    """The ``[data]`` table for what ptychodus hands ``train``: a directory in ptychodus's
    batch layout (``product.h5`` + ``diffraction.h5``), a training NPZ, or a directory holding
    ``train_data.npz`` (PtychoPINN's name) or exactly one NPZ."""
    product = StandardFileLayout.PRODUCT.path(input_path)
    diffraction = StandardFileLayout.DIFFRACTION.path(input_path)
    if product.is_file() and diffraction.is_file():
        files = {"product_file": str(product), "diffraction_file": str(diffraction)}
        return {"source": "ptychodus", "ptychodus": files}
    return {"source": "npz", "train_file": str(_training_npz(input_path))}


def _training_npz(input_path: Path) -> Path:
    if input_path.is_file():
        return input_path
    candidates = sorted(input_path.glob("*.npz")) if input_path.is_dir() else []
    named = input_path / "train_data.npz"
    if named.is_file() or len(candidates) == 1:
        return named if named.is_file() else candidates[0]
    msg = (
        "expected product.h5 + diffraction.h5 (ptychodus's batch layout), a training NPZ, or a "
        f"folder with train_data.npz or exactly one NPZ (found {len(candidates)} NPZ files)"
    )
    raise DataError(msg, path=str(input_path))


def training_spec(input_path: Path, *, model_type: str, base: str) -> str:
    """The spec ``train`` compiles: the reconstructor's defaults, then ``base`` (a user spec,
    may be empty), then this file's data, task and model type."""
    tree = {
        "spec_version": 1,
        "extends": [str(base_spec("ptychodus")), *([str(Path(base).resolve())] if base else [])],
        "run": {"task": "train"},
        "data": training_data(input_path.resolve()),
        "model": {"model_type": model_type},
    }
    header = "# Written by the ptycho-spec ptychodus reconstructor for train(); the lock is in\n"
    header += f"# {Path(TRAIN_SPEC).stem}/run.lock.toml.\n"
    return header + tomli_w.dumps(tree)


@frozen
class EpochLoss:
    epoch: int
    training: float | None
    validation: float | None


class EpochLosses(pl.Callback):
    """Hands each epoch's losses to the consuming thread; stops training when asked to."""

    def __init__(self, events: queue.Queue[EpochLoss | None], stop: threading.Event) -> None:
        self.events, self.stop = events, stop

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        values = [float(metrics[k]) if k in metrics else None for k in ("train_loss", "val_loss")]
        self.events.put(EpochLoss(trainer.current_epoch, *values))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.stop.is_set():
            trainer.should_stop = True


def check_single_process(lock: Lock) -> None:
    """More processes would be launched by re-running ptychodus itself: refuse."""
    e = lock.resolved.execution
    if e.devices * e.num_nodes > 1:
        msg = (
            f"execution.devices × num_nodes = {e.devices * e.num_nodes}: the ptychodus "
            "reconstructor trains in one process; use `ptycho-spec run` for multi-device runs"
        )
        raise UsageError(msg)


def train_with_losses(lock: Lock, paths: Mapping[str, str], run_dir: Path) -> Iterator[EpochLoss]:
    """Run ``lock`` (its data files at ``paths``) into ``run_dir`` in a worker thread, yielding
    each epoch's losses; a consumer that stops early stops training at the next step (the run
    still completes)."""
    events: queue.Queue[EpochLoss | None] = queue.Queue()
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptycho-spec-train") as pool:
        run = pool.submit(
            execute,
            lock,
            paths=paths,
            out_dir=run_dir,
            force=True,
            callbacks=(EpochLosses(events, stop),),
        )
        run.add_done_callback(lambda _: events.put(None))
        try:
            while (event := events.get()) is not None:
                yield event
        finally:
            stop.set()
        run.result()  # the worker's exception, if any, surfaces here


# --- the reconstructor and its library ----------------------------------------------------------


class PtychoSpecReconstructor(TrainableReconstructor):
    """PtychoPINN ("PINN") or its supervised variant ("Supervised", trained on the product's
    object as labels, e.g. an iterative reconstruction) as a ptychodus reconstructor."""

    def __init__(self, name: str, settings: PtychoSpecSettings) -> None:
        if name not in MODEL_TYPES:
            msg = f"reconstructor name must be one of {', '.join(MODEL_TYPES)} (got {name!r})"
            raise UsageError(msg)
        self._name, self._settings = name, settings
        self._model: LoadedModel | None = None
        self._losses: list[LossValue] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def model_type(self) -> str:
        return MODEL_TYPES[self._name]

    def get_progress_goal(self) -> int:
        return PROGRESS_GOAL

    def reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        model = self._loaded()
        scan = scan_from_input(parameters, labels=False)
        frame = (parameters.product.object_.height_px, parameters.product.object_.width_px)
        steps = reconstruct_in_steps(
            model, scan, canvas_shape=frame, device=self._settings.device()
        )
        for progress, obj in steps:
            product = output_product(parameters.product, obj, self._losses)
            yield ReconstructOutput(product=product, progress=progress)

    def _loaded(self) -> LoadedModel:
        if self._model is None:
            msg = f"{LIBRARY_NAME}/{self._name}: no model loaded; load a model bundle or train"
            raise RunError(msg)
        return self._model

    def is_model_loaded(self) -> bool:
        return self._model is not None

    def get_model_file_filter(self) -> str:
        return MODEL_FILE_FILTER

    def get_model_file_extension(self) -> str:
        return MODEL_EXTENSION

    def load_model_from_file(self, file_path: Path) -> None:
        model = load_model(Path(file_path))
        trained = model.canonical.model.model_type
        if trained != self.model_type:
            msg = f'a "{trained}" model; the {self._name} reconstructor runs "{self.model_type}" models'
            raise DataError(msg, path=str(file_path))
        self._model, self._losses = model, []

    def save_model(self, file_path: Path) -> None:
        atomic.write_bytes(file_path, self._loaded().data)

    def get_training_data_file_filter(self) -> str:
        return TRAINING_DATA_FILE_FILTER

    def export_training_data(self, file_path: Path, parameters: ReconstructInput) -> None:
        """An NPZ in the PtychoPINN contract (amplitude ``diff3d``, object-pixel coordinates),
        with its bad-pixel mask and its photons per pattern, so training from it is training
        on ``parameters``."""
        scan = scan_from_input(parameters, labels=self.model_type == "supervised")
        bad = _bad_pixels(parameters.bad_pixels, scan.amplitude.shape[1:])
        photons = pf.mean_counts(parameters.diffraction_patterns, bad, path=scan.source)
        write_npz(scan, file_path, measurement="amplitude", nphotons=photons)

    def train(self, input_path: Path, output_path: Path) -> Iterator[TrainOutput]:
        output = Path(output_path)
        output.mkdir(parents=True, exist_ok=True)
        spec = output / TRAIN_SPEC
        text = training_spec(
            Path(input_path), model_type=self.model_type, base=self._settings.spec_file.get_value()
        )
        atomic.write_text(spec, text)
        lock = compile_spec(str(spec), self._settings.sets())
        for warning in lock.warnings:
            logger.warning(warning.render())
        check_single_process(lock)
        run_dir = output / spec.stem
        training: list[LossValue] = []
        validation: list[LossValue] = []
        nepochs = lock.resolved.canonical.training.nepochs
        paths = compiled_paths(lock)
        for event in train_with_losses(lock, paths, run_dir):
            if event.training is not None:
                training.append(LossValue(event.epoch, event.training))
            if event.validation is not None:
                validation.append(LossValue(event.epoch, event.validation))
            progress = round(PROGRESS_GOAL * (event.epoch + 1) / nepochs)
            yield TrainOutput(list(training), list(validation), progress=progress)
        self._model, self._losses = load_model(run_dir / "model.bundle"), training
        # Where ptychodus's batch reconstruct looks for a model: <dir>/model<extension>.
        model_file = output / f"{StandardFileLayout.MODEL_BASENAME}{MODEL_EXTENSION}"
        atomic.write_bytes(model_file, self._model.data)
        yield TrainOutput(list(training), list(validation), progress=PROGRESS_GOAL)


class PtychoSpecReconstructorLibrary(ReconstructorLibrary):
    """Library "ptycho-spec" with reconstructors "PINN" and "Supervised"; ptychodus selects
    them as ``ptycho-spec_pinn`` and ``ptycho-spec_supervised`` (``[Processing] Algorithm``).
    ``is_developer_mode_enabled`` is accepted as ptychodus's own libraries accept it."""

    def __init__(
        self, settings_registry: SettingsRegistry, is_developer_mode_enabled: bool = False
    ) -> None:
        super().__init__(__name__)
        self.settings = PtychoSpecSettings(settings_registry)
        self._reconstructors = [PtychoSpecReconstructor(n, self.settings) for n in MODEL_TYPES]

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    def __iter__(self) -> Iterator[Reconstructor]:
        return iter(self._reconstructors)
