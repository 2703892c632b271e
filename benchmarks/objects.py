"""Test objects and probe perturbations for the quality suite: pure numpy, no data files.

Besides the "lines" recipe (``runner.data.simulate.lines_object``) the suite reconstructs a
Siemens-star-like object (sharp radial spokes in amplitude and phase: resolution in every
direction, down to the spokes' merging point) and a weak-phase "cells" object (smooth blobs,
phase ≤ 0.3 rad, amplitude 0.95–1: the regime of unstained biological samples, where the
phase is nearly all the signal).
"""

from __future__ import annotations

import math

import numpy as np

from runner.physics.kernels import gaussian_filter, scipy_radius

STAR_SPOKES = 36  # spoke pairs: 10° per period, the classic Siemens star
STAR_SUPERSAMPLE = 4  # sub-pixel samples per axis, so spoke edges are area-weighted, not jagged


def siemens_star(
    size: int, *, spokes: int = STAR_SPOKES, amplitude_dip: float = 0.5, phase_rad: float = 1.0
) -> np.ndarray:
    """A Siemens star of ``spokes`` spoke pairs filling a disk of diameter 0.9·size: ``(size,
    size)`` complex64.

    Inside a spoke the amplitude is 1 − ``amplitude_dip`` and the phase ``phase_rad``; between
    spokes and outside the disk the object is 1 (free space). A hole of radius size/20 at the
    centre, where the spokes would be narrower than a pixel, is free space too. Each pixel is
    the mean over ``STAR_SUPERSAMPLE``² sub-pixel samples.
    """
    s = STAR_SUPERSAMPLE
    t = (np.arange(size * s) + 0.5) / s - size / 2
    yy, xx = np.meshgrid(t, t, indexing="ij")
    radius, angle = np.hypot(xx, yy), np.arctan2(yy, xx)
    spoke = (np.cos(spokes * angle) > 0) & (radius < 0.45 * size) & (radius > size / 20)
    fill = spoke.reshape(size, s, size, s).mean(axis=(1, 3))
    amp = 1.0 - amplitude_dip * fill
    return (amp * np.exp(1j * phase_rad * fill)).astype(np.complex64)


def cells(
    size: int,
    *,
    seed: int,
    max_phase_rad: float = 0.3,
    amplitude_dip: float = 0.05,
    density: float = 1.0 / 900,
) -> np.ndarray:
    """Weak-phase "cells": ``(size, size)`` complex64 with phase in [0, ``max_phase_rad``] and
    amplitude in [1 − ``amplitude_dip``, 1].

    ``density``·size² elliptical cells with soft edges (radii 6–16 px, random orientation),
    each holding a denser nucleus (a third of its radius); their sum B, clipped at 1.5 and
    scaled to [0, 1], gives phase = max_phase_rad·B and amplitude = 1 − amplitude_dip·B.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size), dtype=np.float64)
    body = np.zeros((size, size))
    for _ in range(max(1, round(density * size * size))):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(6, 16, 2)
        theta = rng.uniform(0, math.pi)
        u = (xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)
        v = -(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)
        r = np.hypot(u / rx, v / ry)
        edge = np.clip((r - 1) * 8, -50, 50)  # a logistic edge ~1/8 of the radius wide
        nucleus = np.clip((3 * r - 1) * 8, -50, 50)
        body += 1 / (1 + np.exp(edge)) + 0.8 / (1 + np.exp(nucleus))
    smooth = gaussian_filter(np.minimum(body, 1.5), 1.0, radius=scipy_radius(1.0), mode="symmetric")
    b = smooth / smooth.max()
    return ((1 - amplitude_dip * b) * np.exp(1j * max_phase_rad * b)).astype(np.complex64)


def defocus(probe: np.ndarray, distance_px: float) -> np.ndarray:
    """``probe (N, N)`` propagated by Fresnel (angular-spectrum, paraxial) over a distance
    given as λ·z/Δx² in pixels: ``(N, N)`` complex64 with the same total power.

    The transfer function is exp(−iπ·λz·(fx² + fy²)) with fx, fy in cycles per pixel, so
    ``distance_px`` is the only physical parameter. A probe defocused this way keeps its power
    but not its shape: a solver that holds it fixed sees a wrong illumination, which only
    probe refinement can undo.
    """
    n = probe.shape[-1]
    f = np.fft.fftfreq(n)
    kernel = np.exp(-1j * math.pi * distance_px * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(probe) * kernel).astype(np.complex64)
