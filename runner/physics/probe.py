"""Probe normalization (applied once), the soft probe mask, and the initial output gain."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from runner.physics.kernels import gaussian_filter


def probe_mask(N: int) -> Tensor:
    """Soft disk mask of diameter N/2: ``(N, N)`` float32 in [0, 1].

    A hard disk r < N/4 about pixel N/2 − 0.5 (``ptycho/probe.py``'s centring), blurred by a
    Gaussian of σ = 1 px with zero padding and rescaled to a peak of 1, as
    ``ptycho_torch/probe_mask.py`` builds it.
    """
    t = np.arange(N) - N // 2 + 0.5
    disk = (np.hypot(t[:, None], t[None, :]) < N / 4).astype(np.float64)
    soft = gaussian_filter(disk, 1.0, radius=3, mode="constant")
    return torch.from_numpy(np.clip(soft / soft.max(), 0.0, 1.0).astype(np.float32))


def normalize_probe(probe: Tensor, probe_scale: float, mask: Tensor | None = None) -> Tensor:
    """P̂ = P / (probe_scale · mean|M·P|): ``(N, N)`` complex → ``(N, N)`` complex.

    ``ptycho/probe.py`` ``set_probe``. Applied exactly once (PtychoPINN's torch port divides
    by probe_scale a second time in its forward pass; here nothing else rescales the probe).
    The mean runs over all N² pixels, masked by ``mask`` (N, N) when given.
    """
    support = probe if mask is None else probe * mask
    norm = probe_scale * support.abs().double().mean()
    return probe / norm.to(probe.real.dtype)


START_AMPLITUDE = 0.5
"""Object amplitude at which the initial gain matches the data: the sigmoid head's output at
zero logits. Matching at amplitude 1 instead would ask a sigmoid head to saturate before it can
fit the data's mean energy (see ``specs/physics-contract.md``)."""


def initial_gain(probe_hat: Tensor, mask: Tensor | None = None) -> float:
    """g₀ = sqrt((N/2)² / Σ|M·P̂|²) / a₀ with a₀ = ``START_AMPLITUDE``.

    At g₀ a flat object of amplitude a₀ diffracts with the network input's mean energy (N/2)²:
    Σ|g₀·F(a₀·M·P̂)|² = g₀²·a₀²·Σ|M·P̂|² by Parseval (orthonormal FFT). ``probe_hat`` is the
    normalized probe ``(N, N)`` complex; ``mask`` ``(N, N)`` or None.
    """
    n = probe_hat.shape[-1]
    support = probe_hat if mask is None else probe_hat * mask
    energy = float((support.abs().double() ** 2).sum())
    return float(np.sqrt((n / 2) ** 2 / energy) / START_AMPLITUDE)
