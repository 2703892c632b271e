"""Gaussian kernels and a separable numpy Gaussian filter (scipy is not a runtime dependency).

Used by the probe mask, the simulated "lines" object and disk probe (numpy, once per run) and by
the exit-wave smoothing (torch, every step; it only needs the kernel weights).
"""

from __future__ import annotations

import numpy as np


def gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """Normalized samples of exp(−t²/2σ²) at t = −radius..radius: ``(2·radius+1,)`` float64."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def scipy_radius(sigma: float, truncate: float = 4.0) -> int:
    """The kernel radius ``scipy.ndimage.gaussian_filter`` uses: int(truncate·σ + 0.5)."""
    return int(truncate * sigma + 0.5)


def gaussian_filter(image: np.ndarray, sigma: float, *, radius: int, mode: str) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array, ``(H, W)`` float64 → ``(H, W)`` float64.

    ``mode`` is a ``numpy.pad`` mode for the borders: ``"symmetric"`` equals scipy.ndimage's
    default ``"reflect"`` (edge sample repeated), the convention of ``ptycho/fourier.py``'s
    ``gf``; ``"constant"`` pads zeros, the convention of ``ptycho_torch/probe_mask.py``.
    """
    k = gaussian_kernel(sigma, radius)
    out = np.asarray(image, dtype=np.float64)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode=mode)
        length = out.shape[axis]
        acc = np.zeros_like(out)
        for tap, weight in enumerate(k):
            acc += weight * np.take(padded, np.arange(tap, tap + length), axis=axis)
        out = acc
    return out
