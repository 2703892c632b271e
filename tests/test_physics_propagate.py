"""Illumination, exit-wave smoothing and far-field propagation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage  # test-only: scikit-image depends on scipy

from runner.data.simulate import disk_probe
from runner.physics.kernels import gaussian_filter, gaussian_kernel
from runner.physics.propagate import amplitude, far_field, gaussian_smooth, illuminate


def randc(*shape: int, seed: int = 0, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


class TestFarField:
    def test_parseval(self) -> None:
        """The orthonormal transform keeps the total energy of every pattern."""
        psi = randc(3, 2, 64, 64, dtype=torch.complex128)
        energy_in = (psi.abs() ** 2).sum(dim=(-2, -1))
        energy_out = (far_field(psi).abs() ** 2).sum(dim=(-2, -1))
        torch.testing.assert_close(energy_out, energy_in, rtol=1e-12, atol=0)

    def test_dc_at_centre(self) -> None:
        """A constant exit wave puts all its energy in pixel (N/2, N/2)."""
        out = far_field(torch.ones(1, 64, 64, dtype=torch.complex64)).abs()
        assert out[0, 32, 32] == pytest.approx(64.0)
        assert float(out.sum() - out[0, 32, 32]) == pytest.approx(0.0, abs=1e-3)

    def test_tilt_moves_the_peak(self) -> None:
        """A phase ramp of k cycles per patch along x moves the peak k pixels right of centre."""
        j = torch.arange(64)
        ramp = torch.exp(2j * torch.pi * 5 * j / 64).expand(64, 64)
        peak = int(far_field(ramp).abs().argmax())
        assert divmod(peak, 64) == (32, 37)

    def test_float32_matches_float64(self) -> None:
        """complex64 and complex128 transforms agree to single precision."""
        psi = randc(2, 64, 64, dtype=torch.complex128)
        torch.testing.assert_close(
            far_field(psi.to(torch.complex64)).to(torch.complex128),
            far_field(psi),
            rtol=1e-5,
            atol=1e-5,
        )

    def test_twin_of_a_real_symmetric_probe(self) -> None:
        """Through a real, centro-symmetric probe (the disk: P(r) = P(−r)) an object O and its
        twin conj(O(−r)) diffract to the same amplitude, so one pattern cannot tell them apart
        (why the PINN alone misses on the quality suite's disk-probe cases). Give the probe a
        defocus phase and they differ."""
        probe = torch.from_numpy(disk_probe(64)).to(torch.complex128)
        g = torch.Generator().manual_seed(0)
        obj = torch.polar(
            1 + 0.3 * torch.rand(64, 64, dtype=torch.float64, generator=g),
            torch.rand(64, 64, dtype=torch.float64, generator=g),
        )
        twin = obj.flip(-2, -1).conj()
        same = [amplitude(far_field(illuminate(o, probe))) for o in (obj, twin)]
        torch.testing.assert_close(same[0], same[1], rtol=1e-9, atol=1e-9)
        r2 = (torch.arange(64, dtype=torch.float64) - 31.5).square()
        defocused = probe * torch.exp(1j * 0.01 * (r2[:, None] + r2[None, :]))
        apart = [amplitude(far_field(illuminate(o, defocused))) for o in (obj, twin)]
        assert float((apart[0] - apart[1]).norm() / apart[0].norm()) > 0.1


class TestAmplitude:
    def test_modulus(self) -> None:
        """The amplitude of 3 + 4i is 5."""
        assert float(amplitude(torch.tensor([3 + 4j]))) == pytest.approx(5.0)


class TestIlluminate:
    def test_broadcasts_one_probe(self) -> None:
        """One (N, N) probe multiplies every pattern of a (B, C, N, N) batch."""
        obj, probe = randc(2, 4, 8, 8), randc(8, 8, seed=1)
        out = illuminate(obj, probe)
        torch.testing.assert_close(out[1, 3], obj[1, 3] * probe)


class TestGaussianSmooth:
    def test_zero_sigma_is_identity(self) -> None:
        """σ = 0 returns the exit wave itself."""
        psi = randc(2, 8, 8)
        assert gaussian_smooth(psi, 0.0) is psi

    def test_matches_explicit_reflect_filter(self) -> None:
        """Real and imaginary parts are each blurred by the normalized 3×3 kernel, reflect borders."""
        psi = randc(1, 9, 11, dtype=torch.complex128)
        k = gaussian_kernel(0.8, 1)
        kernel = np.outer(k, k)

        def blur(part: np.ndarray) -> np.ndarray:
            padded = np.pad(part, 1, mode="reflect")
            return sum(
                kernel[a, b] * padded[a : a + 9, b : b + 11] for a in range(3) for b in range(3)
            )

        expected = blur(psi[0].real.numpy()) + 1j * blur(psi[0].imag.numpy())
        np.testing.assert_allclose(
            gaussian_smooth(psi, 0.8)[0].numpy(), expected, rtol=1e-12, atol=1e-12
        )

    def test_keeps_a_constant(self) -> None:
        """The kernel sums to one, so a constant wave is unchanged."""
        psi = torch.full((1, 6, 6), 2 - 1j, dtype=torch.complex64)
        torch.testing.assert_close(gaussian_smooth(psi, 1.0), psi)


class TestGaussianFilter:
    def test_matches_scipy_convention(self) -> None:
        """Symmetric padding and a kernel radius of int(4σ + 0.5) reproduce scipy.ndimage."""
        img = np.random.default_rng(0).random((20, 17))
        ours = gaussian_filter(img, 2.0, radius=8, mode="symmetric")
        np.testing.assert_allclose(ours, ndimage.gaussian_filter(img, 2.0), rtol=1e-10, atol=1e-12)
