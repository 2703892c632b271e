"""Sub-pixel translation, patch cropping, and the gridsize > 1 overlap constraint.

Sign conventions (``ptycho/raw_data.py`` ``get_relative_coords``, ``ptycho_torch/helper.py``):
``translate(img, d)`` moves the content by +d pixels, ``d[..., 0]`` along x (columns) and
``d[..., 1]`` along y (rows). A group's relative coordinates are ``relative = −(coords − centre)``,
so ``merge_patches`` shifts each patch by −relative (to its place around the group centre) and
``extract_patches`` shifts the canvas by +relative (that place back to the patch centre).

Position convention: a pattern at (x, y) sees object pixel (y − N/2 + i, x − N/2 + j) at patch
pixel (i, j); the scan position is the object pixel under the patch's FFT centre (N/2, N/2),
as ``ptycho/raw_data.py`` ``get_image_patches`` extracts ground-truth patches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_WEIGHT_FLOOR = 1e-6  # canvas pixels with less total weight are outside every patch's centre


def _shift_matrix(d: Tensor, n: int) -> Tensor:
    """Bilinear shift operators: ``d (...,)`` px → ``(..., n, n)`` with out = T @ in.

    Output pixel p reads the input at s = p − d, linearly between ⌊s⌋ and ⌊s⌋ + 1; taps that
    fall outside [0, n) read zero. Integer shifts give exact permutations.
    """
    s = torch.arange(n, dtype=d.dtype, device=d.device) - d[..., None]  # (..., n)
    q0 = torch.floor(s)
    frac = (s - q0)[..., None]
    q = torch.arange(n, dtype=d.dtype, device=d.device)
    lower = (q == q0[..., None]).to(d.dtype)
    upper = (q == q0[..., None] + 1).to(d.dtype)
    return (1 - frac) * lower + frac * upper


def translate(img: Tensor, d: Tensor) -> Tensor:
    """Move the content of ``img (..., H, W)`` by ``d (..., 2)`` = [dx, dy] px, bilinear, zero fill.

    ``d``'s leading axes broadcast against ``img``'s. Separable: out = T_y @ img @ T_xᵀ, a pair
    of batched matmuls, which are deterministic on every device (a scatter or ``grid_sample``
    backward is not) and differentiable in ``img``.
    """
    h, w = img.shape[-2:]
    d = d.to(img.real.dtype)
    ty = _shift_matrix(d[..., 1], h).to(img.dtype)
    tx = _shift_matrix(d[..., 0], w).to(img.dtype)
    return ty @ img @ tx.transpose(-1, -2)


def crop_patches(obj: Tensor, x_px: Tensor, y_px: Tensor, N: int) -> Tensor:
    """Patches of ``obj (H, W)`` at scan positions ``x_px, y_px (M,)`` → ``(M, N, N)``.

    Pixels outside the object read zero. The integer part of each window's corner is a gather,
    the fractional part a bilinear ``translate``; integer positions are exact crops.
    """
    pad = N + 1
    padded = F.pad(obj[None], (pad, pad, pad, pad))[0]
    corner = torch.stack([x_px, y_px], dim=-1).to(obj.device, torch.float64) - N / 2 + pad  # (M, 2)
    base = torch.floor(corner)
    height, width = padded.shape
    if bool(
        (base < 0).any() | (base[:, 0] + N + 1 > width).any() | (base[:, 1] + N + 1 > height).any()
    ):
        msg = f"scan positions lie more than {N} px outside the {tuple(obj.shape)} object"
        raise ValueError(msg)
    idx = torch.arange(N + 1, device=obj.device)
    rows = base[:, 1].long()[:, None] + idx  # (M, N+1)
    cols = base[:, 0].long()[:, None] + idx
    windows = padded[rows[:, :, None], cols[:, None, :]]  # (M, N+1, N+1)
    frac = (corner - base).to(windows.real.dtype)
    return translate(windows, -frac)[:, :N, :N]


def central_box(N: int, *, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """``(N, N)`` weight: 1 on the central N/2 × N/2 box, 0 elsewhere (``mk_centermask``)."""
    box = torch.zeros(N, N, dtype=dtype, device=device)
    box[N // 4 : N // 4 + N // 2, N // 4 : N // 4 + N // 2] = 1
    return box


def merge_patches(patches: Tensor, relative: Tensor, window: Tensor | None = None) -> Tensor:
    """Overlap-average a group's patches: ``(B, C, N, N)`` complex, ``relative (B, C, 2)`` px →
    canvas ``(B, M, M)`` complex centred on the group centre.

    Weighted mean: canvas = Σ_c T(W·O_c) / Σ_c T(W) with T the shift by −relative_c and W the
    ``window`` ``(N, N)`` ≥ 0, by default the central box (``ptycho_torch/helper.py``,
    ``training_patch_weighting = 'central_mask'``); pixels with Σ T(W) ≤ 1e-6 are 0. The
    numerator is weighted too, so the canvas never amplifies a patch's periphery. The reference
    adds 1e-3 to the denominator (a 0.1 % bias); here the mean is exact.

    M = N + 2·max(0, ⌈max|relative|⌉ + 1 − m), with m = N/4 for the box (its zero margin; usually
    M = N) and 0 for a given window: just large enough to hold every shifted window and its
    bilinear fringe.
    """
    n = patches.shape[-1]
    if window is None:
        window, margin = central_box(n, dtype=patches.real.dtype, device=patches.device), n // 4
    else:
        window, margin = window.to(patches.real.dtype), 0
    reach = math.ceil(float(relative.detach().abs().max())) if relative.numel() else 0
    pad = max(0, reach + 1 - margin)
    stacked = torch.stack([patches * window, window.to(patches.dtype).expand_as(patches)])
    moved = translate(F.pad(stacked, (pad, pad, pad, pad)), -relative)  # (2, B, C, M, M)
    numerator, weight = moved.sum(dim=2).unbind(0)
    weight = weight.real
    covered = weight > _WEIGHT_FLOOR
    return torch.where(covered, numerator / weight.clamp_min(_WEIGHT_FLOOR), 0)


def extract_patches(canvas: Tensor, relative: Tensor, N: int) -> Tensor:
    """Re-extract a group's patches: canvas ``(B, M, M)``, ``relative (B, C, 2)`` → ``(B, C, N, N)``.

    Shifts the canvas by +relative_c and crops the central N × N, the inverse placement of
    ``merge_patches`` (``ptycho_torch/helper.py`` ``extract_channels_from_region``).
    """
    m = canvas.shape[-1]
    start = (m - N) // 2
    moved = translate(canvas[:, None], relative)  # (B, C, M, M)
    return moved[..., start : start + N, start : start + N]
