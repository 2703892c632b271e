"""Illumination, exit-wave smoothing and far-field propagation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from runner.physics.kernels import gaussian_kernel


def illuminate(obj: Tensor, probe: Tensor) -> Tensor:
    """Exit wave ψ = O · P: ``(..., N, N)`` complex times ``(N, N)`` complex → ``(..., N, N)``.

    One probe for every pattern (the probe broadcasts over the leading axes; trap 8 is a
    flattened per-batch probe that multiplied the amplitude by B).
    """
    return obj * probe


def gaussian_smooth(psi: Tensor, sigma: float) -> Tensor:
    """3×3 Gaussian blur of the real and imaginary parts: ``(..., N, N)`` complex → same.

    ``ptycho/model.py`` ``ProbeIllumination`` (``complex_gaussian_filter2d``, filter 3×3,
    reflect padding that does not repeat the edge sample). σ = 0 returns ψ unchanged.
    """
    if sigma == 0:
        return psi
    k1 = torch.as_tensor(gaussian_kernel(sigma, 1), dtype=psi.real.dtype, device=psi.device)
    kernel = (k1[:, None] * k1[None, :])[None, None]  # (1, 1, 3, 3)
    lead, (h, w) = psi.shape[:-2], psi.shape[-2:]
    parts = torch.view_as_real(psi).movedim(-1, -3).reshape(-1, 1, h, w)  # (L·2, 1, N, N)
    smooth = F.conv2d(F.pad(parts, (1, 1, 1, 1), mode="reflect"), kernel)
    smooth = smooth.reshape(*lead, 2, h, w).movedim(-3, -1).contiguous()
    return torch.view_as_complex(smooth)


def far_field(psi: Tensor) -> Tensor:
    """Far-field wave: orthonormal 2-D FFT then fftshift, ``(..., N, N)`` complex → same.

    Orthonormal so that Σ|Ψ|² = Σ|ψ|² (Parseval), and the zero frequency lands at pixel
    (N/2, N/2) (``ptycho/tf_helper.py`` ``pad_and_diffract`` with pad=False: FFT2, |·|²/N²).
    """
    return torch.fft.fftshift(torch.fft.fft2(psi, norm="ortho"), dim=(-2, -1))


def amplitude(field: Tensor) -> Tensor:
    """Diffraction amplitude |Ψ|: ``(..., N, N)`` complex → ``(..., N, N)`` real."""
    return field.abs()
