"""The refinement engine's two uses in a run: the PINN's stitched reconstruction → the refined
one, and, before training, the data's probe → a calibrated one.

``refine_reconstruction`` takes the resolved ``refine`` settings, the scan that was
reconstructed and the PINN's ``Reconstruction``; ``calibrate_probe`` takes the training scan.
Both run ``engine.refine`` on the run's device at the run's precision and return what the run
records about it.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch
from attrs import frozen

from ptycho_spec.errors import RunError
from ptycho_spec.schema import Canonical
from runner.data.scan import Scan
from runner.infer.reconstruct import Reconstruction
from runner.infer.stitch import covering_canvas
from runner.refine.engine import LIT_SHARE, Measurements, Refined, photons_per_unit, refine


@frozen(kw_only=True)
class RefineOutcome:
    """The refined reconstruction, the probe it ended with (None unless ``refine.probe``), and
    the record for ``metrics.json``."""

    reconstruction: Reconstruction
    probe: np.ndarray | None
    record: dict[str, Any]


def starting_object(rec: Reconstruction) -> np.ndarray:
    """The PINN's object where its stitch weight reaches ``LIT_SHARE`` of the largest, elsewhere
    its mean amplitude there (phase 0).

    Where only the edges of a few patches landed, the PINN's values are the network's least
    trusted (the phase head saturates there) and the data constrain them weakly, so
    refinement would keep them for many passes: on the quality suite, starting from every
    covered pixel left a phase MAE of 0.087 rad on the lines anchor against 0.052 rad from the
    lit pixels only, at α = 0.2 (``benchmarks/RESULTS.md``)."""
    top = float(rec.weight.max())
    if not top > 0:
        msg = "the PINN's reconstruction covers no object pixel; nothing to refine"
        raise RunError(msg)
    lit = rec.weight >= LIT_SHARE * top
    fill = np.abs(rec.obj[lit]).mean()
    return np.where(lit, rec.obj, fill).astype(np.complex64)


@frozen(kw_only=True)
class Calibration:
    """The probe found before training ``(N, N)`` complex64, and the record for
    ``metrics.json``."""

    probe: np.ndarray
    record: dict[str, Any]


def calibrate_probe(
    scan: Scan, *, c: Canonical, device: torch.device, precision: str, progress: bool
) -> Calibration:
    """Refine object and probe against every pattern of the training ``scan`` for
    ``c.training.calibrate_probe`` passes, from a flat object and the data's probe.

    One pattern constrains only the product of object and probe, so a generator trained at
    gridsize 1 absorbs a wrong probe into its patches; the overlap of every pattern on one object
    does pin the probe down (star-wrongprobe: 20 passes, 2 s on one CPU thread, take the
    defocused probe from 0.97 to 0.018 of the true one; ``benchmarks/RESULTS.md``)."""
    n = scan.probe.shape[-1]
    shape = (
        scan.object.shape if scan.object is not None else covering_canvas(scan.x_px, scan.y_px, n)
    )
    result = _run_engine(
        np.ones(shape, np.complex64),
        scan,
        c=c,
        device=device,
        precision=precision,
        progress=progress,
        iterations=c.training.calibrate_probe,
        update_probe=True,
        update_positions=False,
        label="calibrate probe",
    )
    return Calibration(
        probe=result.probe.to("cpu", torch.complex64).numpy(),
        record={"nll_per_iteration": list(result.nll), "probe_scale": result.probe_scale},
    )


def refine_reconstruction(
    rec: Reconstruction,
    scan: Scan,
    *,
    c: Canonical,
    device: torch.device,
    precision: str,
    progress: bool,
) -> RefineOutcome:
    """Refine ``rec`` against every pattern of ``scan`` as ``c.refine`` says."""
    settings = c.refine
    result = _run_engine(
        starting_object(rec),
        scan,
        c=c,
        device=device,
        precision=precision,
        progress=progress,
        iterations=settings.iterations,
        update_probe=settings.probe,
        update_positions=settings.positions,
    )
    refined = _as_reconstruction(result, rec)
    return RefineOutcome(
        reconstruction=refined,
        probe=result.probe.to("cpu", torch.complex64).numpy() if settings.probe else None,
        record=_record(result, scan, settings.positions),
    )


def _run_engine(
    start: np.ndarray,
    scan: Scan,
    *,
    c: Canonical,
    device: torch.device,
    precision: str,
    progress: bool,
    iterations: int,
    update_probe: bool,
    update_positions: bool,
    label: str = "refine",
) -> Refined:
    """``engine.refine`` from object ``start`` and ``scan``'s probe against ``scan``'s patterns;
    float64 under the "64-true" precision, else float32 (FFTs have no half-precision path for
    these sizes)."""
    cdtype = torch.complex128 if precision == "64-true" else torch.complex64
    rdtype = torch.float64 if precision == "64-true" else torch.float32
    data = Measurements(
        amplitude=torch.from_numpy(scan.masked_amplitude()).to(device, rdtype),
        valid=None if scan.valid_mask is None else torch.from_numpy(scan.valid_mask).to(device),
        photons_per_unit=photons_per_unit(scan.masked_amplitude(), c.training.nphotons),
    )
    return refine(
        torch.from_numpy(start).to(device, cdtype),
        torch.from_numpy(scan.probe).to(device, cdtype),
        torch.from_numpy(scan.x_px).to(device),
        torch.from_numpy(scan.y_px).to(device),
        data,
        iterations=iterations,
        batch_size=c.refine.batch_size,
        update_probe=update_probe,
        update_positions=update_positions,
        seed=c.seeds.refine,
        progress=progress,
        label=label,
    )


def _as_reconstruction(result: Refined, rec: Reconstruction) -> Reconstruction:
    illumination = result.illumination.to("cpu", torch.float64).numpy()
    lit = illumination >= LIT_SHARE * illumination.max()  # the rest is not reconstructed
    return attrs.evolve(
        rec,
        obj=result.object.to("cpu", torch.complex64).numpy(),
        weight=np.where(lit, illumination, 0.0).astype(np.float32),
        x_px=result.x_px.cpu().numpy(),
        y_px=result.y_px.cpu().numpy(),
    )


def _record(result: Refined, scan: Scan, positions: bool) -> dict[str, Any]:
    """``metrics.json``'s ``refine`` entry: the NLL per iteration and what was fitted."""
    record: dict[str, Any] = {
        "nll_per_iteration": list(result.nll),
        "probe_scale": result.probe_scale,
    }
    if positions:
        moved = np.hypot(
            result.x_px.cpu().numpy() - scan.x_px, result.y_px.cpu().numpy() - scan.y_px
        )
        record["position_change_px"] = {
            "rms": float(np.sqrt(np.mean(moved**2))),
            "max": float(moved.max()),
        }
    return record
