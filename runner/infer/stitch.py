"""Position-aware shift-and-average stitching of object patches onto the object pixel grid."""

from __future__ import annotations

import numpy as np

_WEIGHT_FLOOR = 1e-6  # canvas pixels with less total weight count as uncovered
CHUNK = 1024  # patches splatted together: bounds the index arrays to ~100 MiB at N = 128


def _corner_taps(start: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bilinear splat of a patch whose pixel 0 sits at ``start (P,)`` px along one axis:
    [(integer offset (P,), weight (P,))] for the two grid pixels it straddles."""
    base = np.floor(start)
    frac = start - base
    return [(base.astype(np.int64), 1 - frac), (base.astype(np.int64) + 1, frac)]


def covering_canvas(x_px: np.ndarray, y_px: np.ndarray, n: int) -> tuple[int, int]:
    """The object frame ``(H, W)`` from pixel (0, 0) to the far edge of every ``n``-pixel patch
    at positions ``x_px, y_px``: the canvas when the data sets none."""
    return int(np.ceil(np.max(y_px) + n / 2)) + 1, int(np.ceil(np.max(x_px) + n / 2)) + 1


def stitch(
    patches: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    *,
    trim: int,
    canvas_shape: tuple[int, int] | None = None,
    pixel_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Average patches ``(P, N, N)`` complex at positions ``x_px, y_px (P,)`` into an object.

    Patch pixel (i, j) of a pattern at (x, y) lies on object pixel (y − N/2 + i, x − N/2 + j)
    (``runner/physics/shift.py``); sub-pixel positions splat bilinearly onto the 4 neighbouring
    pixels. Only the central region, ``trim`` px cut from each side, contributes, each pixel
    with weight ``pixel_weight[i, j]`` ``(N, N)`` ≥ 0 (None: 1 everywhere; the illumination
    intensity |P|² trusts a patch where its probe was bright). Returns the object ``(H, W)``
    complex64 (weighted mean; 0 where nothing landed) and the summed weight ``(H, W)`` float64. The canvas starts at object pixel (0, 0);
    ``canvas_shape`` defaults to reaching every patch's far edge (pass the ground truth's shape
    to overlay it).
    Vectorized: one ``bincount`` per bilinear tap over ``CHUNK`` patches at a time.
    """
    patches = np.asarray(patches)
    n = patches.shape[-1]
    if not 0 <= trim < n / 2:
        msg = f"trim must be in [0, {n // 2}) for {n} px patches (got {trim})"
        raise ValueError(msg)
    core_weight = np.ones((n - 2 * trim,) * 2)
    if pixel_weight is not None:
        core_weight = _checked_weight(pixel_weight, n)[trim : n - trim, trim : n - trim]
        if not core_weight.max() > 0:
            msg = f"pixel_weight is 0 over the whole central region kept by trim {trim}"
            raise ValueError(msg)
    x0 = np.asarray(x_px, np.float64) - n / 2 + trim
    y0 = np.asarray(y_px, np.float64) - n / 2 + trim
    h, w = canvas_shape or covering_canvas(x_px, y_px, n)
    core = patches[:, trim : n - trim, trim : n - trim]
    sums = np.zeros((3, h * w))
    for start in range(0, len(core), CHUNK):
        part = slice(start, start + CHUNK)
        sums += _splat(core[part], core_weight, x0[part], y0[part], (h, w))
    total = sums[2].reshape(h, w)
    covered = total > _WEIGHT_FLOOR * core_weight.max()
    safe = np.where(covered, total, 1.0)
    obj = np.where(covered, (sums[0] + 1j * sums[1]).reshape(h, w) / safe, 0)
    return obj.astype(np.complex64), np.where(covered, total, 0.0)


def _checked_weight(pixel_weight: np.ndarray, n: int) -> np.ndarray:
    weight = np.asarray(pixel_weight, np.float64)
    if weight.shape != (n, n) or not np.isfinite(weight).all() or (weight < 0).any():
        msg = f"pixel_weight must be finite, ≥ 0 and {n}×{n} (got shape {weight.shape})"
        raise ValueError(msg)
    return weight


def _splat(
    core: np.ndarray,
    core_weight: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    shape: tuple[int, int],
) -> np.ndarray:
    """Weighted real, imaginary and weight sums ``(3, H·W)`` of patch cores ``(P, k, k)`` with
    per-pixel weights ``(k, k)`` whose pixel (0, 0) sits at (y0, x0); one ``bincount`` per
    bilinear tap, none per patch."""
    h, w = shape
    ii = np.arange(core.shape[-1])
    sums = np.zeros((3, h * w))
    for oy, wy in _corner_taps(y0):
        for ox, wx in _corner_taps(x0):
            rows = oy[:, None, None] + ii[None, :, None]  # (P, k, 1)
            cols = ox[:, None, None] + ii[None, None, :]  # (P, 1, k)
            sel = np.broadcast_to((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w), core.shape)
            flat = np.broadcast_to(rows * w + cols, core.shape)[sel]
            weight = ((wy * wx)[:, None, None] * core_weight)[sel]
            values = core[sel]
            sums[0] += np.bincount(flat, weight * values.real, minlength=h * w)
            sums[1] += np.bincount(flat, weight * values.imag, minlength=h * w)
            sums[2] += np.bincount(flat, weight, minlength=h * w)
    return sums
