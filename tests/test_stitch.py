"""Position-aware shift-and-average stitching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from images import smooth_object

from runner.data.simulate import lines_object, raster_positions
from runner.infer.stitch import stitch
from runner.physics.shift import crop_patches


def patches_of(obj: np.ndarray, x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    return crop_patches(torch.from_numpy(obj), torch.from_numpy(x), torch.from_numpy(y), n).numpy()


class TestStitch:
    def test_recovers_the_object_from_exact_patches(self) -> None:
        """Exact patches at raster positions rebuild the object wherever a patch centre landed."""
        obj = lines_object(96, seed=1).astype(np.complex128)
        x, y = raster_positions(96, 32, 8)
        rec, weight = stitch(patches_of(obj, x, y, 32), x, y, trim=8, canvas_shape=obj.shape)
        covered = weight > 0
        np.testing.assert_allclose(rec[covered], obj[covered], rtol=1e-6)
        assert covered[8:88, 8:88].all() and not covered[:8].any()
        assert rec.dtype == np.complex64 and weight.dtype == np.float64

    def test_subpixel_positions(self) -> None:
        """Patches cut at sub-pixel positions land back at those positions (bilinear splat)."""
        obj = smooth_object(96, seed=2).numpy()
        x, y = raster_positions(96, 32, 8)
        rng = np.random.default_rng(0)
        x, y = x + rng.uniform(-0.5, 0.5, x.shape), y + rng.uniform(-0.5, 0.5, y.shape)
        rec, _ = stitch(patches_of(obj, x, y, 32), x, y, trim=8, canvas_shape=obj.shape)
        inner = (slice(12, 84), slice(12, 84))
        assert float(np.abs(rec[inner] - obj[inner]).max()) < 0.03

    def test_weight_counts_overlaps(self) -> None:
        """Each core pixel adds weight 1: two 8 × 8 cores 4 px apart overlap on 8 rows × 4 columns."""
        patches = np.ones((2, 16, 16), np.complex64)
        rec, weight = stitch(patches, np.array([20.0, 24.0]), np.array([20.0, 20.0]), trim=4)
        assert weight.max() == 2.0
        assert int((weight == 2).sum()) == 8 * 4  # columns 20 … 23 lie in both cores
        assert int((weight > 0).sum()) == 8 * 12
        np.testing.assert_allclose(rec[weight > 0], 1.0)

    def test_only_the_trimmed_core_counts(self) -> None:
        """Values outside the central region never reach the canvas."""
        patch = np.full((1, 16, 16), 100, np.complex64)
        patch[:, 4:12, 4:12] = 1
        rec, _ = stitch(patch, np.array([10.0]), np.array([10.0]), trim=4)
        assert np.abs(rec).max() == pytest.approx(1.0)
        assert rec.shape == (19, 19)  # reaches the patch's far edge at 10 + 8, plus 1

    def test_uncovered_is_zero(self) -> None:
        """Pixels no patch reaches have value 0 and weight 0."""
        rec, weight = stitch(
            np.ones((1, 8, 8), np.complex64),
            np.array([20.0]),
            np.array([20.0]),
            trim=2,
            canvas_shape=(40, 40),
        )
        assert rec[0, 0] == 0 and weight[0, 0] == 0
        assert float(weight.sum()) == pytest.approx(16.0)

    def test_pixel_weight_forms_a_weighted_mean(self) -> None:
        """Where cores overlap, each pixel is Σ w·value / Σ w with w read at that patch pixel."""
        patches = np.stack([np.full((16, 16), 1, np.complex64), np.full((16, 16), 3, np.complex64)])
        w = np.tile(np.arange(1.0, 17.0), (16, 1))  # weight j + 1 along patch columns j
        rec, weight = stitch(
            patches, np.array([20.0, 24.0]), np.array([20.0, 20.0]), trim=4, pixel_weight=w
        )
        # object column 22 is column 10 of the first patch (starts at 12), column 6 of the second
        assert rec[20, 22] == pytest.approx((11 * 1 + 7 * 3) / (11 + 7))
        assert weight[20, 22] == pytest.approx(11 + 7)
        assert rec[20, 17] == pytest.approx(1.0)  # first core only
        assert rec[20, 27] == pytest.approx(3.0)  # second core only

    def test_pixel_weight_keeps_exact_patches_exact(self) -> None:
        """Any positive weighting of consistent patches, at sub-pixel positions too, rebuilds
        the object: a weighted mean of equal values."""
        obj = smooth_object(96, seed=3).numpy()
        x, y = raster_positions(96, 32, 8)
        w = np.random.default_rng(1).uniform(0.1, 2.0, (32, 32))
        rec, weight = stitch(
            patches_of(obj, x, y, 32), x, y, trim=8, canvas_shape=obj.shape, pixel_weight=w
        )
        covered = weight > 0
        np.testing.assert_allclose(rec[covered], obj[covered], rtol=1e-5)

    def test_zero_weight_pixels_stay_uncovered(self) -> None:
        """Pixels only reached where the weight is 0 are uncovered (value 0, weight 0)."""
        w = np.zeros((16, 16))
        w[6:10, 6:10] = 1
        rec, weight = stitch(
            np.ones((1, 16, 16), np.complex64),
            np.array([20.0]),
            np.array([20.0]),
            trim=2,
            pixel_weight=w,
        )
        assert int((weight > 0).sum()) == 16 and rec[13, 13] == 0
        np.testing.assert_allclose(rec[weight > 0], 1.0)

    @pytest.mark.parametrize(
        ("w", "match"),
        [
            (np.ones((8, 8)), "16×16"),
            (np.full((16, 16), np.nan), "finite"),
            (-np.ones((16, 16)), "≥ 0"),
            (1 - np.pad(np.ones((4, 4)), 6), "0 over the whole central region"),
        ],
    )
    def test_pixel_weight_checks(self, w: np.ndarray, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            stitch(
                np.ones((1, 16, 16), np.complex64),
                np.array([9.0]),
                np.array([9.0]),
                trim=6,
                pixel_weight=w,
            )

    def test_trim_bounds(self) -> None:
        with pytest.raises(ValueError, match="trim"):
            stitch(np.ones((1, 8, 8), np.complex64), np.array([4.0]), np.array([4.0]), trim=4)
