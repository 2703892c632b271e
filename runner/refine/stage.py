"""The refinement stage of a run: the PINN's stitched reconstruction → the refined one.

Takes the resolved ``refine`` settings, the scan that was reconstructed and the PINN's
``Reconstruction``; runs ``engine.refine`` on the run's device at the run's precision; returns
the refined ``Reconstruction`` and what the run records about it.
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


def refine_reconstruction(
    rec: Reconstruction,
    scan: Scan,
    *,
    c: Canonical,
    device: torch.device,
    precision: str,
    progress: bool,
) -> RefineOutcome:
    """Refine ``rec`` against every pattern of ``scan`` as ``c.refine`` says; float64 under the
    "64-true" precision, else float32 (FFTs have no half-precision path for these sizes)."""
    cdtype = torch.complex128 if precision == "64-true" else torch.complex64
    rdtype = torch.float64 if precision == "64-true" else torch.float32
    data = Measurements(
        amplitude=torch.from_numpy(scan.masked_amplitude()).to(device, rdtype),
        valid=None if scan.valid_mask is None else torch.from_numpy(scan.valid_mask).to(device),
        photons_per_unit=photons_per_unit(scan.masked_amplitude(), c.training.nphotons),
    )
    settings = c.refine
    result = refine(
        torch.from_numpy(starting_object(rec)).to(device, cdtype),
        torch.from_numpy(scan.probe).to(device, cdtype),
        torch.from_numpy(scan.x_px).to(device),
        torch.from_numpy(scan.y_px).to(device),
        data,
        iterations=settings.iterations,
        batch_size=settings.batch_size,
        update_probe=settings.probe,
        update_positions=settings.positions,
        seed=c.seeds.refine,
        progress=progress,
    )
    refined = _as_reconstruction(result, rec)
    return RefineOutcome(
        reconstruction=refined,
        probe=result.probe.to("cpu", torch.complex64).numpy() if settings.probe else None,
        record=_record(result, scan, settings.positions),
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
