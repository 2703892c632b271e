"""Test images shared by the physics and stitching tests."""

from __future__ import annotations

import numpy as np
import torch


def smooth_object(size: int, *, seed: int) -> torch.Tensor:
    """A smooth complex test image ``(size, size)`` complex128: a few low spatial frequencies,
    so bilinear interpolation errors stay small."""
    rng = np.random.default_rng(seed)
    t = np.arange(size) / size
    img = np.zeros((size, size), np.complex128)
    for _ in range(6):
        kx, ky = rng.integers(0, 3, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        img += rng.normal() * np.exp(2j * np.pi * (kx * t[None, :] + ky * t[:, None]) + 1j * phase)
    return torch.from_numpy(0.5 + 0.1 * img)
