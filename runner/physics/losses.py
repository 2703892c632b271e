"""Loss terms, each accepting an optional ``(N, N)`` pixel mask (1 = counts, 0 = excluded).

Diffraction terms compare amplitudes in network units (``specs/physics-contract.md``): the
prediction A and the measurement x = r·X, both ``(B, C, N, N)`` float. Their normalizations are
frozen constants, never batch statistics, so a loss value does not depend on which
patterns share a batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

POISSON_EPS = 1e-8
"""Photons added to λ inside the log: keeps log λ finite where the prediction is exactly 0."""


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over every axis, counting only pixels where ``mask (H, W)`` is nonzero (weighted)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    lead = values.numel() // mask.numel()
    return (values * mask).sum() / (mask.sum() * lead)


def poisson_nll(
    pred: Tensor,
    observed: Tensor,
    *,
    photon_scale: float,
    mean_photons: float,
    mask: Tensor | None = None,
) -> Tensor:
    """Poisson negative log-likelihood per photon, a float64 scalar.

    λ = (S·A)², k = (S·x)² (expected and measured photons), and
    L = mean_b Σ_{c,h,w} [λ − k·log(λ + ε) + lgamma(k + 1)] / Ī,
    with S = ``photon_scale`` and Ī = ``mean_photons`` frozen. The full log-likelihood keeps
    lgamma(k + 1) (``torch.distributions.Poisson``; TF's ``log_poisson_loss`` drops it):
    a constant that makes the minimum sit near ½·log(2πk) per pixel instead of below zero.
    Computed in float64: at 1e9 photons λ and k log λ cancel to ~1e-7 relative.
    """
    lam = (photon_scale * pred.double()) ** 2
    k = (photon_scale * observed.double()) ** 2
    per_pixel = lam - k * torch.log(lam + POISSON_EPS) + torch.lgamma(k + 1)
    if mask is not None:
        per_pixel = per_pixel * mask.to(per_pixel.dtype)
    return per_pixel.sum(dim=(-3, -2, -1)).mean() / mean_photons


def amplitude_mae(pred: Tensor, observed: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Mean absolute amplitude error in network units, a scalar of ``pred``'s dtype.

    L = mean_{b,c,h,w} |A − x| = mean |S·A − S·x| / S: the reference's photon-scaled MAE with
    the frozen S divided out instead of the batch's mean amplitude. Since the mean
    energy Σx² is (N/2)², a typical |x| is ½ and L is O(0.1) for a fair fit.
    """
    return _masked_mean((pred - observed).abs(), mask)


def _wrapped(angle: Tensor) -> Tensor:
    """Angle difference mapped to (−π, π]."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def supervised_l1(pred: Tensor, target: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Supervised object loss 2·L1(|O|) + 4·L1(arg O): ``(B, C, N, N)`` complex pair → scalar.

    Weights from ``ptycho_torch/model.py`` (supervised mode). The phase error is wrapped to
    (−π, π] so a target at +π and a prediction at −π count as equal.
    """
    amp = _masked_mean((pred.abs() - target.abs()).abs(), mask)
    phase = _masked_mean(_wrapped(pred.angle() - target.angle()).abs(), mask)
    return 2 * amp + 4 * phase


def total_variation(obj: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Anisotropic total variation of a complex object ``(B, C, N, N)`` → scalar.

    mean|O[.., i, j+1] − O[.., i, j]| + mean|O[.., i+1, j] − O[.., i, j]|, the modulus of the
    complex difference (free of phase wrapping). With ``mask``, a difference counts where both
    of its pixels are inside the mask.
    """
    dx = (obj[..., :, 1:] - obj[..., :, :-1]).abs()
    dy = (obj[..., 1:, :] - obj[..., :-1, :]).abs()
    if mask is None:
        return dx.mean() + dy.mean()
    mx = mask[:, 1:] * mask[:, :-1]
    my = mask[1:, :] * mask[:-1, :]
    return _masked_mean(dx, mx) + _masked_mean(dy, my)
