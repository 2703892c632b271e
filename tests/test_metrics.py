"""Reconstruction metrics: SSIM (against scikit-image), FRC, alignment and scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity  # test-only dependency

from runner.data.simulate import lines_object
from runner.metrics import evaluate, frc, match_phase, remove_plane, ssim


def images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(lines_object(64, seed=seed)).astype(np.float64)
    b = a + 0.05 * np.random.default_rng(seed).standard_normal(a.shape)
    return a, b


class TestSSIM:
    def test_matches_skimage_default(self) -> None:
        """The uniform 7 × 7 window with sample covariance: skimage's default, as the reference calls it."""
        a, b = images()
        rng = float(a.max() - a.min())
        assert ssim(a, b, data_range=rng) == pytest.approx(
            structural_similarity(a, b, data_range=rng), abs=1e-3
        )
        assert ssim(a, b, data_range=rng) == pytest.approx(
            structural_similarity(a, b, data_range=rng), abs=1e-10
        )

    def test_matches_skimage_gaussian(self) -> None:
        """The Gaussian σ = 1.5 window without sample covariance."""
        a, b = images(1)
        ours = ssim(a, b, data_range=1.0, gaussian=True)
        theirs = structural_similarity(
            a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ours == pytest.approx(theirs, abs=1e-10)

    def test_identical_is_one(self) -> None:
        a, _ = images()
        assert ssim(a, a, data_range=1.0) == pytest.approx(1.0)


class TestFRC:
    def test_identical_images_correlate_fully(self) -> None:
        """FRC of an image with itself is 1 on every ring; the 0.5 crossing is the ring count."""
        a, _ = images()
        curve, crossing = frc(a, a)
        np.testing.assert_allclose(curve, 1.0)
        assert crossing == len(curve) == 32

    def test_independent_noise_crosses_early(self) -> None:
        """Two independent noise images decorrelate at once."""
        rng = np.random.default_rng(0)
        curve, crossing = frc(rng.standard_normal((64, 64)), rng.standard_normal((64, 64)))
        assert crossing < 2
        assert np.abs(curve[2:]).mean() < 0.2

    def test_noise_lowers_high_rings(self) -> None:
        """Added white noise hurts high frequencies more than low ones; the crossing is interpolated."""
        a, b = images()
        curve, crossing = frc(a, b)
        assert curve[1] > 0.9 and curve[-1] < 0.5
        r = int(np.ceil(crossing))
        assert curve[r - 1] >= 0.5 > curve[r]
        assert r - 1 <= crossing <= r


class TestRemovePlane:
    def test_removes_an_exact_plane(self) -> None:
        yy, xx = np.indices((20, 30))
        img = 0.1 * xx - 0.2 * yy + 0.7
        np.testing.assert_allclose(remove_plane(img, np.ones(img.shape, bool)), 0, atol=1e-12)


class TestEvaluate:
    def test_perfect_reconstruction(self) -> None:
        """Identical objects: no error, SSIM 1, infinite PSNR, full FRC."""
        obj = lines_object(64, seed=3)
        m = evaluate(obj, obj)
        assert m.amplitude.mae == pytest.approx(0, abs=1e-6) and m.phase.mae == pytest.approx(
            0, abs=1e-6
        )
        assert m.amplitude.ssim == pytest.approx(1.0) and m.phase.ssim == pytest.approx(1.0)
        assert m.amplitude.psnr == math.inf
        assert m.amplitude.frc50 == 30  # a 60 px square after the 2 px border

    @pytest.mark.parametrize(
        ("kx", "ky", "offset"),
        [(0.01, -0.02, 0.3), (0.0, 0.0, 3.0), (0.15, -0.1, -2.5)],
        ids=["small", "offset-wraps", "ramp-wraps"],
    )
    def test_alignment_invariances(self, kx: float, ky: float, offset: float) -> None:
        """Amplitude scale and phase planes (ramp + offset) are aligned away before scoring,
        also when they wrap the phase (an offset near π, a ramp of several turns)."""
        obj = lines_object(64, seed=3).astype(np.complex128)
        yy, xx = np.indices(obj.shape)
        tilted = 3.0 * np.abs(obj) * np.exp(1j * (np.angle(obj) + kx * xx + ky * yy + offset))
        m = evaluate(tilted, obj)
        assert m.amplitude.mae == pytest.approx(0, abs=1e-6)
        assert m.phase.mae == pytest.approx(0, abs=1e-6)
        assert m.phase.ssim == pytest.approx(1.0)

    def test_match_phase_ignores_uncovered_pixels(self) -> None:
        """The ramp is estimated on ``where`` only: noise elsewhere does not bias it."""
        obj = lines_object(48, seed=6).astype(np.complex128)
        _, xx = np.indices(obj.shape)
        pred = obj * np.exp(1j * (0.2 * xx + 1.0))
        where = np.zeros(obj.shape, bool)
        where[8:40, 8:40] = True
        rng = np.random.default_rng(1)
        pred[~where] = np.exp(2j * np.pi * rng.random(int((~where).sum())))
        np.testing.assert_allclose(match_phase(pred, obj, where)[where], obj[where], atol=1e-9)

    def test_flat_object_scores_worse(self) -> None:
        """A flat guess has far lower SSIM than a noisy but faithful one, and a finite PSNR."""
        obj = lines_object(96, seed=4)
        noisy = obj * (1 + 0.02 * np.random.default_rng(0).standard_normal(obj.shape))
        good, flat = evaluate(noisy, obj), evaluate(np.ones_like(obj), obj)
        assert good.amplitude.ssim > flat.amplitude.ssim + 0.3
        assert good.amplitude.psnr > flat.amplitude.psnr and math.isfinite(flat.amplitude.psnr)

    def test_only_covered_pixels_count(self) -> None:
        """Garbage outside the covered region does not change the scores."""
        obj = lines_object(64, seed=5)
        weight = np.zeros(obj.shape)
        weight[10:50, 12:52] = 1
        spoiled = obj.copy()
        spoiled[:8] = 0
        a, b = evaluate(obj, obj, weight=weight), evaluate(spoiled, obj, weight=weight)
        assert a.to_dict() == b.to_dict()
        assert len(a.to_dict()["phase"]["frc"]) == 18  # a 36 × 36 box: 40 − 2·2 px

    def test_to_dict_is_json_ready(self) -> None:
        import json

        obj = lines_object(64, seed=6)
        assert json.loads(json.dumps(evaluate(obj, obj).to_dict()))["amplitude"][
            "ssim"
        ] == pytest.approx(1.0)

    def test_nothing_covered_raises(self) -> None:
        obj = lines_object(32, seed=1)
        with pytest.raises(ValueError, match="covered"):
            evaluate(obj, obj, weight=np.zeros(obj.shape))
