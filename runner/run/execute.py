"""Execute a lock: the whole run, from data to pictures, and nothing the lock does not say.

Order matters for the "nothing half-written" promise: every input (data, bundle) is loaded
and checked before the run directory is claimed; outputs are written atomically; ``COMPLETE``
is written last. Under DDP every rank trains, and only global rank 0 writes.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import attrs
import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_only

from ptycho_spec import __version__, atomic
from ptycho_spec.errors import LockError
from ptycho_spec.lock import Lock, dumps_lock, loads_lock
from ptycho_spec.schema import Canonical, Execution
from runner import rundir
from runner.infer.reconstruct import Reconstruction, flat_heads, reconstruct, score
from runner.interop.ptychodus_product import PRODUCT_OUTPUT, loss_values, write_product
from runner.models.pinn import PtychoPINN
from runner.physics.scaling import ScalingConstants
from runner.refine.stage import calibrate_probe, refine_reconstruction
from runner.run import outputs
from runner.run.prepare import Scans, load_scans
from runner.train import effective
from runner.train.bundle import Bundle, read_bundle, write_bundle
from runner.train.datamodule import training_set
from runner.train.fit import train

COLLAPSE_WARNING = (
    "training ended on a flat object: the generator's amplitude and phase are nearly constant "
    "over most patches (saturated or dead units, or too little training); lower "
    "training.learning_rate, change run.seed, or train longer"
)
UNCENTRED_HINT = "; model.center_input = true lets the decoders take about twice the learning rate"


def flat_head_warning(heads: tuple[str, ...], *, centered: bool) -> str | None:
    """What to tell the user when ``flat_heads`` found ``heads`` flat; None when none is.
    ``centered``: whether the generator saw centred inputs (``model.center_input``)."""
    if not heads:
        return None
    if len(heads) > 1:
        text = COLLAPSE_WARNING
    else:
        (head,) = heads
        text = (
            f"training ended with a flat {head}: the generator's {head} is nearly constant over "
            f"most patches (its decoder's units died, or the object has no {head} contrast); "
            "lower training.learning_rate or change run.seed"
        )
    return text if centered else text + UNCENTRED_HINT


def configure_process(execution: Execution) -> None:
    """Process-wide settings the lock controls, and a quiet Lightning."""
    torch.set_float32_matmul_precision(execution.matmul_precision)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


def device_for(execution: Execution) -> torch.device:
    """The device inference runs on (rank 0's device for multi-device runs)."""
    if execution.accelerator == "cuda":
        return torch.device(
            "cuda", torch.cuda.current_device() if torch.cuda.is_initialized() else 0
        )
    return torch.device(execution.accelerator)


def execute(
    lock: Lock,
    *,
    paths: Mapping[str, str],
    out_dir: Path,
    force: bool = False,
    resume_from: Path | None = None,
    records: Mapping[str, str] = MappingProxyType({}),
    callbacks: Sequence[Callback] = (),
) -> Path:
    """Run ``lock`` into ``out_dir`` and return ``out_dir``.

    ``paths`` (role → file) are the lock's data files where the command layer found them
    (``ptycho_spec.locate``), recorded in ``effective.toml``; ``resume_from``, a checkpoint of
    this lock's interrupted run in ``out_dir``, continues its training; ``records`` (file name
    → text) are written beside the lock, e.g. the drift it ran with. ``callbacks`` join the
    Trainer's (the ptychodus reconstructor's loss feed).
    """
    c, e = lock.resolved.canonical, lock.resolved.execution
    configure_process(e)
    if resume_from is not None:
        # a resume continues the logs and checkpoints it finds (``resume.py``)
        warnings.filterwarnings("ignore", message=".* directory .* exists and is not empty.*")
    with cpu_state(e):
        scans = load_scans(c, paths)
        bundle = _load_bundle(c, paths["bundle"]) if c.run.task == "infer" else None
        found = effective.inputs(lock, paths)
        work = functools.partial(
            _train_and_reconstruct,
            lock,
            scans,
            bundle,
            found,
            out_dir=out_dir,
            ckpt_path=resume_from,
            callbacks=callbacks,
        )
        if rank_zero_only.rank != 0:
            work()
            return out_dir
        with rundir.claim(out_dir, force=force, resume=resume_from is not None):
            atomic.write_text(out_dir / "run.lock.toml", dumps_lock(lock))
            effective.write(out_dir, {"inputs": found})
            for name, text in records.items():
                atomic.write_text(out_dir / name, text)
            work()
            rundir.mark_complete(out_dir, digest=lock.header.digest)
    return out_dir


@contextmanager
def cpu_state(execution: Execution) -> Iterator[None]:
    """The lock's intra-op thread count (it decides how CPU reductions split, so the last bits
    of every result: simulation, training, refinement) and subnormal floats flushed to zero
    (saturated units' subnormal gradients once made CPU steps 10× slower), both while the run
    computes. The process's own settings come back after: they are global CPU state, and a
    host process (tests, the ptychodus GUI) keeps running."""
    threads = torch.get_num_threads()
    if execution.cpu_threads is not None:
        torch.set_num_threads(execution.cpu_threads)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)


def _train_and_reconstruct(
    lock: Lock,
    scans: Scans,
    bundle: Bundle | None,
    found: Mapping[str, Mapping[str, str]],
    *,
    out_dir: Path,
    ckpt_path: Path | None,
    callbacks: Sequence[Callback],
) -> None:
    c, e = lock.resolved.canonical, lock.resolved.execution
    started = time.perf_counter()
    report: dict = {"task": c.run.task, "run_digest": lock.header.run_digest}
    timings: dict[str, float] = {}
    net: PtychoPINN
    if c.run.task == "infer":
        net = net_from_bundle(c, bundle, probe=scans.test.probe)
        if c.training.calibrate_probe > 0:  # the bundle holds the probe it was trained with
            probe = net.probe.detach().to("cpu", torch.complex64).numpy()
            scans = attrs.evolve(scans, test=attrs.evolve(scans.test, probe=probe))
    else:
        if c.training.calibrate_probe > 0:
            scans = _calibrated(scans, c=c, e=e, report=report, timings=timings)
        ts = training_set(c, scans.train)
        module, history, trained = train(
            lock, ts, found=found, out_dir=out_dir, ckpt_path=ckpt_path, callbacks=callbacks
        )
        if rank_zero_only.rank != 0:
            return
        write_bundle(out_dir / "model.bundle", trained, tool_version=__version__)
        outputs.save_loss_plot(out_dir / "loss.png", history)
        report |= {
            "history": history,
            "scaling": attrs.asdict(ts.scaling),
            "n_train_groups": len(ts.train_ids),
            "n_val_groups": len(ts.val_ids),
        }
        net = module.net
        device = device_for(e)
        heads = flat_heads(
            net, scans.train, c=c, scaling=ts.scaling, device=device, precision=e.precision
        )
        report["flat_heads"] = list(heads)
        if (warning := flat_head_warning(heads, centered=c.model.center_input)) is not None:
            report["warnings"] = [warning]
            print(f"warning: {warning}", file=sys.stderr)
    if c.run.task != "train":
        report |= _reconstruct(
            c, e, scans, net, out_dir=out_dir, timings=timings, history=report.get("history", [])
        )
    outputs.save_json(out_dir / "metrics.json", report)
    _write_timing(out_dir, {"wall_time_s": time.perf_counter() - started, **timings})


def _calibrated(
    scans: Scans, *, c: Canonical, e: Execution, report: dict, timings: dict[str, float]
) -> Scans:
    """``scans`` with the probe ``calibrate_probe`` finds on the training scan, which the
    network trains with and the refinement starts from; its record goes to ``report``, its wall
    time to ``timings``."""
    started = time.perf_counter()
    found = calibrate_probe(
        scans.train,
        c=c,
        device=device_for(e),
        precision=e.precision,
        progress=e.enable_progress_bar,
    )
    timings["calibrate_time_s"] = time.perf_counter() - started
    report["calibrate_probe"] = found.record
    return attrs.evolve(
        scans,
        train=attrs.evolve(scans.train, probe=found.probe),
        test=None if scans.test is None else attrs.evolve(scans.test, probe=found.probe),
    )


def _reconstruct(
    c: Canonical,
    e: Execution,
    scans: Scans,
    net: PtychoPINN,
    *,
    out_dir: Path,
    timings: dict[str, float],
    history: list,
) -> dict:
    """Stitch the PINN's patches, refine when ``c.refine`` asks, write the reconstruction's
    files, and return its part of ``metrics.json``; stage wall times go to ``timings``."""
    device = device_for(e)
    started = time.perf_counter()
    rec = reconstruct(
        net,
        scans.test,
        c=c,
        device=device,
        precision=e.precision,
        progress=e.enable_progress_bar,
        n_groups=c.data.n_groups if c.run.task == "infer" else None,
        canvas_shape=scans.canvas_shape,
    )
    timings["reconstruct_time_s"] = time.perf_counter() - started
    report: dict = {}
    pinn, refined = rec, None
    if c.refine.iterations > 0:
        started = time.perf_counter()
        refined = refine_reconstruction(
            rec,
            scans.test,
            c=c,
            device=device,
            precision=e.precision,
            progress=e.enable_progress_bar,
        )
        timings["refine_time_s"] = time.perf_counter() - started
        rec = refined.reconstruction
        report |= {"refine": refined.record, "pinn_reconstruction": score(pinn)}
        outputs.save_nll_plot(out_dir / "refine.png", refined.record["nll_per_iteration"])
    _save_reconstruction(
        out_dir,
        rec,
        pinn=pinn if refined else None,
        probe=refined.probe if refined else None,
    )
    if c.data.source == "ptychodus":
        write_product(
            out_dir / PRODUCT_OUTPUT,
            source=scans.product_file,
            obj=rec.obj,
            losses=loss_values(history),
        )
    return report | {"reconstruction": score(rec), "test_input_scale": rec.input_scale}


def _save_reconstruction(
    out_dir: Path,
    rec: Reconstruction,
    *,
    pinn: Reconstruction | None,
    probe: np.ndarray | None,
) -> None:
    """``reconstruction.npz`` and the pictures: the final object (``rec``), and with a
    refinement stage the PINN's own (``pinn``) beside it, and the refined probe when refined."""
    outputs.save_reconstruction(
        out_dir / "reconstruction.npz",
        obj=rec.obj,
        weight=rec.weight,
        x_px=rec.x_px,
        y_px=rec.y_px,
        truth=rec.truth,
        pinn=None if pinn is None else (pinn.obj, pinn.weight, pinn.x_px, pinn.y_px),
        probe=probe,
    )
    shown = outputs.display_images(rec.obj, rec.weight, rec.truth)
    shown_pinn = None if pinn is None else outputs.display_images(pinn.obj, pinn.weight, rec.truth)
    for name, cmap, unit in (("amplitude", "gray", ""), ("phase", "viridis", " (rad)")):
        image, truth = shown[name]
        panels = [("refined" if pinn is not None else "reconstruction", image, rec.weight)]
        if shown_pinn is not None:
            panels.insert(0, ("PINN", shown_pinn[name][0], pinn.weight))
        if truth is not None:
            panels.append(("ground truth", truth, rec.weight))
        outputs.save_images(
            out_dir / f"{name}.png",
            title=name + unit,
            panels=panels,
            aligned=truth is not None,
            cmap=cmap,
        )


def _write_timing(out_dir: Path, seconds: Mapping[str, float]) -> None:
    """Wall times (the run's, and its stages') live apart from metrics.json, which a replay must
    reproduce exactly."""
    import tomli_w

    rounded = {name: round(value, 3) for name, value in seconds.items()}
    atomic.write_text(out_dir / "timing.toml", tomli_w.dumps(rounded))


def _load_bundle(c: Canonical, path: str) -> Bundle:
    bundle = read_bundle(Path(path))
    trained = loads_lock(bundle.lock_text).resolved.canonical
    if trained.model != c.model:
        msg = (
            f"{path}: the lock's model settings differ from the bundle's; "
            "recompile the inference spec against this bundle"
        )
        raise LockError(msg)
    return bundle


def net_from_bundle(c: Canonical, bundle: Bundle, *, probe) -> PtychoPINN:
    net = PtychoPINN(
        model=c.model, probe=torch.from_numpy(probe), scaling=ScalingConstants(**bundle.scaling)
    )
    net.load_state_dict(bundle.state_dict, strict=True)
    return net
