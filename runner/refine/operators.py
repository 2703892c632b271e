"""Sub-pixel patch extraction from a whole object and its adjoint, for the refinement stage.

The extraction is exactly ``runner.physics.shift.crop_patches`` (the simulator's and the
network's convention): a pattern at (x, y) sees object pixel (y − N/2 + i, x − N/2 + j) at patch
pixel (i, j), read bilinearly between the four integer pixels around it. Here the window's
integer corner and fractional part are kept apart (``Windows``) so that the same taps give the
adjoint (scatter), the derivative with respect to the position, and the illumination sums.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Windows(NamedTuple):
    """Where B patches of side N sit on an object canvas.

    ``row0``, ``col0``: the canvas row/column of each window's corner (B ints); a window spans
    N + 1 pixels per side (the bilinear taps reach one pixel further). ``fy``, ``fx`` ``(B, 1,
    1)`` float64: the fractional part of each corner, in [0, 1).
    """

    row0: list[int]
    col0: list[int]
    fy: Tensor
    fx: Tensor
    N: int


def windows(x_px: Tensor, y_px: Tensor, N: int, *, offset_px: int = 0) -> Windows:
    """Windows of patches at scan positions ``x_px, y_px (B,)`` on a canvas whose pixel
    (offset_px, offset_px) is object pixel (0, 0) (a padded canvas)."""
    corner = torch.stack([x_px, y_px]) - N / 2 + offset_px  # (2, B)
    base = torch.floor(corner)
    frac = corner - base
    start = base.long().tolist()
    return Windows(
        row0=start[1], col0=start[0], fy=frac[1][:, None, None], fx=frac[0][:, None, None], N=N
    )


def _gather(canvas: Tensor, win: Windows) -> Tensor:
    """The ``(B, N + 1, N + 1)`` windows of ``canvas``: one slice each, which is an order of
    magnitude faster than advanced indexing for patches this large."""
    k = win.N + 1
    return torch.stack(
        [canvas[r : r + k, c : c + k] for r, c in zip(win.row0, win.col0, strict=True)]
    )


def extract(canvas: Tensor, win: Windows) -> Tensor:
    """Patches ``(B, N, N)`` of ``canvas (H, W)`` at ``win`` (bilinear; the forward operator)."""
    big = _gather(canvas, win)
    fy, fx = win.fy.to(big.dtype), win.fx.to(big.dtype)
    rows = torch.lerp(big[:, :, :-1], big[:, :, 1:], fx)
    return torch.lerp(rows[:, :-1], rows[:, 1:], fy)


def extract_adjoint(values: Tensor, win: Windows, shape: tuple[int, int]) -> Tensor:
    """The adjoint of ``extract``: patches ``(B, N, N)`` summed onto a zero canvas ``shape``.

    ⟨extract(O), v⟩ = ⟨O, extract_adjoint(v)⟩. The windows are added one after another, so the
    sum is deterministic on every device.
    """
    fy, fx = win.fy.to(values.real.dtype), win.fx.to(values.real.dtype)
    b, n, _ = values.shape
    big = values.new_zeros(b, n + 1, n + 1)
    top, bottom = values * (1 - fy), values * fy
    big[:, :-1, :-1] += top * (1 - fx)
    big[:, :-1, 1:] += top * fx
    big[:, 1:, :-1] += bottom * (1 - fx)
    big[:, 1:, 1:] += bottom * fx
    out = values.new_zeros(shape)
    for k, (r, c) in enumerate(zip(win.row0, win.col0, strict=True)):
        out[r : r + n + 1, c : c + n + 1] += big[k]
    return out


def extract_gradient(canvas: Tensor, win: Windows) -> tuple[Tensor, Tensor]:
    """∂patch/∂x and ∂patch/∂y ``(B, N, N)`` each: how the extracted patches change when the
    positions move by one pixel (the exact derivative of the bilinear taps)."""
    big = _gather(canvas, win)
    fy, fx = win.fy.to(big.dtype), win.fx.to(big.dtype)
    along_x = big[:, :, 1:] - big[:, :, :-1]  # (B, N+1, N)
    along_y = big[:, 1:, :] - big[:, :-1, :]  # (B, N, N+1)
    return (
        torch.lerp(along_x[:, :-1], along_x[:, 1:], fy),
        torch.lerp(along_y[:, :, :-1], along_y[:, :, 1:], fx),
    )
