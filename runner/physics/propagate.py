"""Illumination, exit-wave smoothing and far-field propagation."""

from __future__ import annotations

import torch
from torch import Tensor

from runner.physics.kernels import gaussian_kernel


def illuminate(obj: Tensor, probe: Tensor) -> Tensor:
    """Exit wave ψ = O · P: ``(..., N, N)`` complex times ``(N, N)`` complex → ``(..., N, N)``.

    One probe for every pattern (the probe broadcasts over the leading axes; a probe flattened
    per batch instead would multiply the amplitude by B).
    """
    return obj * probe


def _blur3(x: Tensor, taps: tuple[float, float, float], dim: int) -> Tensor:
    """3-tap filter along ``dim`` with reflect borders (row −1 reads row 1, row n reads n − 2).

    Built from slices, so its backward pass is deterministic on every device (CUDA's
    reflection-pad backward is not).
    """
    n = x.shape[dim]
    padded = torch.cat([x.narrow(dim, 1, 1), x, x.narrow(dim, n - 2, 1)], dim=dim)
    return sum(t * padded.narrow(dim, i, n) for i, t in enumerate(taps))


def gaussian_smooth(psi: Tensor, sigma: float) -> Tensor:
    """3×3 Gaussian blur of the real and imaginary parts: ``(..., N, N)`` complex → same.

    ``ptycho/model.py`` ``ProbeIllumination`` (``complex_gaussian_filter2d``, filter 3×3,
    reflect padding that does not repeat the edge sample). σ = 0 returns ψ unchanged.
    """
    if sigma == 0:
        return psi
    taps = tuple(float(t) for t in gaussian_kernel(sigma, 1))
    return _blur3(_blur3(psi, taps, -2), taps, -1)


def far_field(psi: Tensor) -> Tensor:
    """Far-field wave: orthonormal 2-D FFT then fftshift, ``(..., N, N)`` complex → same.

    Orthonormal so that Σ|Ψ|² = Σ|ψ|² (Parseval), and the zero frequency lands at pixel
    (N/2, N/2) (``ptycho/tf_helper.py`` ``pad_and_diffract`` with pad=False: FFT2, |·|²/N²).
    """
    return torch.fft.fftshift(torch.fft.fft2(psi, norm="ortho"), dim=(-2, -1))


def amplitude(field: Tensor) -> Tensor:
    """Diffraction amplitude |Ψ|: ``(..., N, N)`` complex → ``(..., N, N)`` real."""
    return field.abs()


def far_field_inverse(field: Tensor) -> Tensor:
    """The inverse of ``far_field``: ifftshift then orthonormal inverse 2-D FFT, ``(..., N, N)``
    complex → same, so ``far_field_inverse(far_field(ψ)) = ψ``."""
    return torch.fft.ifft2(torch.fft.ifftshift(field, dim=(-2, -1)), norm="ortho")
