"""The scaling contract's constants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from runner.data.simulate import disk_probe
from runner.physics.probe import initial_gain, normalize_probe, probe_mask
from runner.physics.scaling import CHUNK_PATTERNS, InputCentering, ScalingConstants


class TestScalingConstants:
    def test_from_training(self, make_model) -> None:
        """r normalizes the mean energy to (N/2)², S = sqrt(nphotons)/(N/2), Ī = nphotons."""
        amp = np.random.default_rng(0).random((10, 64, 64), dtype=np.float32)
        probe = disk_probe(64)
        sc = ScalingConstants.from_training(amp, model=make_model(), nphotons=4e6, probe=probe)
        x = sc.network_input(amp).astype(np.float64)
        assert (x**2).sum(axis=(1, 2)).mean() == pytest.approx(32.0**2, rel=1e-6)
        assert sc.photon_scale == pytest.approx(math.sqrt(4e6) / 32)
        assert sc.mean_photons == 4e6
        assert ((sc.photon_scale * x) ** 2).sum(axis=(1, 2)).mean() == pytest.approx(4e6, rel=1e-6)
        assert sc.initial_gain == pytest.approx(
            initial_gain(normalize_probe(torch.from_numpy(probe), 4.0))
        )

    def test_counts_are_reproduced(self, make_model) -> None:
        """For counts data with nphotons = mean counts, k = (S·x)² equals the counts."""
        counts = np.random.default_rng(1).poisson(50.0, (6, 64, 64)).astype(np.float64)
        amp = np.sqrt(counts).astype(np.float32)
        nphotons = counts.sum(axis=(1, 2)).mean()
        sc = ScalingConstants.from_training(
            amp, model=make_model(), nphotons=nphotons, probe=disk_probe(64)
        )
        k = (sc.photon_scale * sc.network_input(amp).astype(np.float64)) ** 2
        np.testing.assert_allclose(k, counts, rtol=1e-5, atol=1e-4)

    def test_probe_mask_changes_the_gain(self, make_model) -> None:
        """The gain is computed with the mask when the model masks the probe."""
        amp = np.ones((2, 64, 64), np.float32)
        plain = ScalingConstants.from_training(
            amp, model=make_model(), nphotons=1e6, probe=disk_probe(64)
        )
        masked = ScalingConstants.from_training(
            amp, model=make_model(probe_mask=True), nphotons=1e6, probe=disk_probe(64)
        )
        expected = initial_gain(
            normalize_probe(torch.from_numpy(disk_probe(64)), 4.0, probe_mask(64)), probe_mask(64)
        )
        assert masked.initial_gain == pytest.approx(expected)
        assert masked.initial_gain != pytest.approx(plain.initial_gain)

    def test_rejects_non_positive(self) -> None:
        """Every constant must be a positive finite number."""
        with pytest.raises(ValueError, match="input_scale"):
            ScalingConstants(input_scale=0.0, photon_scale=1.0, mean_photons=1.0, initial_gain=1.0)
        with pytest.raises(ValueError, match="initial_gain"):
            ScalingConstants(
                input_scale=1.0, photon_scale=1.0, mean_photons=1.0, initial_gain=math.inf
            )


class TestInputCentering:
    def test_mean_pattern_and_spread(self) -> None:
        """x̄ is the mean pattern of x = r·X and s the standard deviation about it over every
        pixel, the same when the patterns are summed in several chunks."""
        rng = np.random.default_rng(2)
        for count in (7, 2 * CHUNK_PATTERNS + 3):
            amp = (rng.random((count, 8, 8)) * 3 + np.arange(64).reshape(8, 8)).astype(np.float32)
            centering = InputCentering.from_training(amp, input_scale=0.5)
            x = 0.5 * amp.astype(np.float64)
            assert centering.mean.dtype == np.float32 and centering.mean.shape == (8, 8)
            np.testing.assert_allclose(centering.mean, x.mean(axis=0), rtol=1e-6)
            assert centering.spread == pytest.approx(float((x - x.mean(axis=0)).std()), rel=1e-6)

    def test_no_spread_is_refused(self) -> None:
        """Identical patterns leave nothing to scale by."""
        with pytest.raises(ValueError, match="spread"):
            InputCentering.from_training(np.ones((3, 4, 4), np.float32), input_scale=1.0)
