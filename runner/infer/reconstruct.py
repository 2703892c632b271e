"""Reconstruction: predict object patches for a scan, stitch them, score them."""

from __future__ import annotations

import numpy as np
import torch
from attrs import frozen

from ptycho_spec.errors import RunError
from ptycho_spec.schema import Canonical
from runner.data.grouping import group_scan, input_scale
from runner.data.scan import Scan
from runner.infer.align import align_gains
from runner.infer.stitch import stitch
from runner.metrics import evaluate
from runner.models.pinn import PtychoPINN
from runner.physics.scaling import ScalingConstants, to_network_units


@frozen(kw_only=True)
class Reconstruction:
    """A stitched object in the object-pixel frame of the scan positions."""

    obj: np.ndarray  # (H, W) complex64
    weight: np.ndarray  # (H, W) float32, 0 where no patch contributed
    x_px: np.ndarray  # (M,) scan positions used
    y_px: np.ndarray
    truth: np.ndarray | None  # (H, W) complex64 ground truth when known
    input_scale: float  # r of the scan (the network's input normalization)


def inference_groups(c: Canonical, scan: Scan, *, n_groups: int | None) -> np.ndarray:
    """Group indices ``(G, C)`` covering the scan: every pattern seeds one group in order."""
    m = len(scan.x_px)
    groups = group_scan(
        scan.x_px,
        scan.y_px,
        gridsize=c.model.gridsize,
        n_groups=m if n_groups is None else n_groups,
        neighbor_count=c.data.neighbor_count,
        sequential=True,
        seed=c.seeds.grouping,
    )
    return groups.indices


AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def predict_patches(
    net: PtychoPINN,
    x: torch.Tensor,
    indices: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    precision: str,
    progress: bool,
) -> np.ndarray:
    """Object patches ``(G, C, N, N)`` complex64 for groups ``indices`` of inputs ``x (M,N,N)``,
    at the run's precision: mixed precisions under autocast, "64-true" in float64."""
    from tqdm.auto import tqdm

    net = net.to(device).eval()
    dtype = next(net.parameters()).dtype
    autocast = torch.autocast(
        device.type, dtype=AUTOCAST.get(precision, torch.bfloat16), enabled=precision in AUTOCAST
    )
    chunks = []
    starts = range(0, len(indices), batch_size)
    with torch.inference_mode(), autocast:
        for start in tqdm(
            starts, desc="reconstruct", unit="batch", disable=not progress, leave=False
        ):
            idx = torch.from_numpy(indices[start : start + batch_size])
            batch = x[idx].to(device, dtype, non_blocking=True)  # (B, C, N, N)
            chunks.append(net.predict_object(batch).to("cpu", torch.complex64))
    return torch.cat(chunks).numpy()


def network_input(scan: Scan, n: int) -> tuple[torch.Tensor, float]:
    """Inputs x = r·X ``(M, N, N)`` float32 of a scan (bad pixels zeroed) and its scale r."""
    amplitude = scan.masked_amplitude()
    r = input_scale(amplitude, n)
    return torch.from_numpy(to_network_units(amplitude, r)), r


def stitch_groups(
    patches: np.ndarray,
    indices: np.ndarray,
    scan: Scan,
    *,
    c: Canonical,
    net: PtychoPINN,
    canvas_shape: tuple[int, int] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Object and weight of patches ``(G, C, N, N)`` of groups ``indices`` stitched at their scan
    positions on ``canvas_shape`` (None: the ground truth's shape, else reaching every patch),
    each pixel weighted as ``inference.stitch`` says: 1, or the illumination of ``net``. With
    ``inference.align_patches`` each patch is first multiplied by the phase factor that makes it
    agree best with its overlapping neighbours (``align_gains``)."""
    n = patches.shape[-1]
    flat = indices.reshape(-1)
    patches = patches.reshape(-1, n, n)
    pixel_weight, trim = None, c.inference.trim
    if c.inference.stitch == "probe":
        pixel_weight = net.illumination_intensity().cpu().double().numpy()
        if not pixel_weight[trim : n - trim, trim : n - trim].any():
            msg = (
                f'inference.stitch = "probe": the probe is dark over the whole central region '
                f'that inference.trim = {trim} keeps; lower the trim or stitch by "position"'
            )
            raise RunError(msg)
    if c.inference.align_patches:
        gains = align_gains(
            patches, scan.x_px[flat], scan.y_px[flat], trim=trim, pixel_weight=pixel_weight
        )
        patches = patches * gains[:, None, None].astype(patches.dtype)
    return stitch(
        patches,
        scan.x_px[flat],
        scan.y_px[flat],
        trim=trim,
        canvas_shape=canvas_shape or (None if scan.object is None else scan.object.shape),
        pixel_weight=pixel_weight,
    )


def reconstruct(
    net: PtychoPINN,
    scan: Scan,
    *,
    c: Canonical,
    device: torch.device,
    precision: str,
    progress: bool,
    n_groups: int | None = None,
    canvas_shape: tuple[int, int] | None = None,
) -> Reconstruction:
    """Predict, then stitch the central ``trim``-cut patches at their scan positions, on
    ``canvas_shape`` (the object frame of the positions) when given."""
    x, r = network_input(scan, c.model.N)
    indices = inference_groups(c, scan, n_groups=n_groups)
    patches = predict_patches(
        net,
        x,
        indices,
        batch_size=c.inference.batch_size,
        device=device,
        precision=precision,
        progress=progress,
    )
    obj, weight = stitch_groups(patches, indices, scan, c=c, net=net, canvas_shape=canvas_shape)
    return Reconstruction(
        obj=obj, weight=weight, x_px=scan.x_px, y_px=scan.y_px, truth=scan.object, input_scale=r
    )


COLLAPSE_GROUPS = 64  # groups sampled by ``flat_heads``
FLAT_AMPLITUDE = 1e-3  # within-patch std of the amplitude (relative above 1) that is flat
FLAT_PHASE_RAD = 1e-2  # within-patch std of the phase that is flat


def flat_heads(
    net: PtychoPINN,
    scan: Scan,
    *,
    c: Canonical,
    scaling: ScalingConstants,
    device: torch.device,
    precision: str,
) -> tuple[str, ...]:
    """Which of the generator's heads (``"amplitude"``, ``"phase"``) map most of the first
    groups of ``scan`` to patches flat over their centre (the central N/2 × N/2, where the probe
    is bright; the phase taken about each patch's mean direction). Both flat is the flat-object
    solution a run can sink into when its output heads saturate or its features die, or stay
    in when it trains too little (zero output layers start flat); one flat head is a decoder
    whose last features died (benchmarks/RESULTS.md, "Learning-rate warm-up"), or an object
    without contrast there. A healthy generator's patches vary by ~10⁻¹ in both on the lines
    objects. Only the sampled patterns are scaled into network units (by the training's
    ``scaling``)."""
    n = c.model.N
    indices = inference_groups(c, scan, n_groups=min(COLLAPSE_GROUPS, len(scan.x_px)))
    rows, local = np.unique(indices, return_inverse=True)
    x = torch.from_numpy(scaling.network_input(scan.masked_amplitude(rows)))
    patches = predict_patches(
        net,
        x,
        local.reshape(indices.shape),
        batch_size=COLLAPSE_GROUPS,
        device=device,
        precision=precision,
        progress=False,
    )
    centre = patches[..., n // 4 : n - n // 4, n // 4 : n - n // 4]
    # phase about each patch's mean direction: a head pinned at ±π (both ends are −1) is flat
    phase = np.angle(centre * np.conj(centre.mean(axis=(-2, -1), keepdims=True)))
    amplitude = np.abs(centre)
    scale = np.maximum(amplitude.mean(axis=(-2, -1)), 1.0)
    flat = {
        "amplitude": amplitude.std(axis=(-2, -1)) <= FLAT_AMPLITUDE * scale,
        "phase": phase.std(axis=(-2, -1)) <= FLAT_PHASE_RAD,
    }
    return tuple(head for head, patches_flat in flat.items() if np.mean(patches_flat) >= 0.5)


def score(rec: Reconstruction) -> dict[str, float] | None:
    """Reconstruction metrics against the ground truth, when there is one."""
    if rec.truth is None:
        return None
    return evaluate(rec.obj, rec.truth, weight=rec.weight).to_dict()
