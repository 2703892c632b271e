"""Probe normalization, the soft probe mask and the initial gain."""

from __future__ import annotations

import pytest
import torch

from runner.data.simulate import disk_probe
from runner.physics.probe import START_AMPLITUDE, initial_gain, normalize_probe, probe_mask
from runner.physics.propagate import far_field


class TestNormalizeProbe:
    def test_mean_modulus_is_one_over_scale(self) -> None:
        """After normalization mean|P̂| = 1/probe_scale."""
        probe = torch.from_numpy(disk_probe(64)) * 37
        assert float(normalize_probe(probe, 4.0).abs().mean()) == pytest.approx(0.25, rel=1e-6)

    def test_masked_mean(self) -> None:
        """With a mask the mean runs over M·P."""
        probe = torch.from_numpy(disk_probe(64)) * (2 + 1j)
        mask = probe_mask(64)
        assert float((normalize_probe(probe, 2.0, mask) * mask).abs().mean()) == pytest.approx(
            0.5, rel=1e-6
        )

    def test_scale_invariant(self) -> None:
        """The stored probe's overall scale does not survive normalization."""
        probe = torch.from_numpy(disk_probe(64))
        torch.testing.assert_close(normalize_probe(probe * 1e3, 4.0), normalize_probe(probe, 4.0))


class TestProbeMask:
    def test_soft_disk_of_diameter_half_n(self) -> None:
        """Peak 1 inside, 0 in the corners, about 1/2 on the radius N/4 (σ = 1 px edge)."""
        mask = probe_mask(64)
        assert mask.shape == (64, 64)
        assert float(mask.max()) == pytest.approx(1.0)
        assert float(mask[31, 31]) == pytest.approx(1.0, abs=1e-6)
        assert float(mask[0, 0]) == 0.0
        assert 0.3 < float(mask[31, 31 + 16]) < 0.7
        assert 0.1 < float(mask[20, 20]) <= 1.0

    def test_symmetric_about_its_centre(self) -> None:
        """Centred at pixel N/2 − 0.5: symmetric under a flip of both axes."""
        mask = probe_mask(64)
        torch.testing.assert_close(mask, mask.flip(0))
        torch.testing.assert_close(mask, mask.flip(1))


class TestInitialGain:
    def test_flat_object_at_start_amplitude_matches_input_energy(self) -> None:
        """g₀·|F(a₀·P̂)| has total energy (N/2)², the network input's mean energy."""
        probe_hat = normalize_probe(torch.from_numpy(disk_probe(64)), 4.0)
        g0 = initial_gain(probe_hat)
        energy = float(((g0 * far_field(START_AMPLITUDE * probe_hat)).abs() ** 2).sum())
        assert energy == pytest.approx(32.0**2, rel=1e-5)

    def test_mask_counts(self) -> None:
        """A mask that removes energy raises the gain."""
        probe_hat = normalize_probe(torch.ones(64, 64, dtype=torch.complex64), 4.0)
        assert initial_gain(probe_hat, probe_mask(64)) > initial_gain(probe_hat)
