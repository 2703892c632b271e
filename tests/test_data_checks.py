"""Tests for ptycho_spec.data_checks: what well-formed data must also mean."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_spec.data_checks import (
    CANVAS_BUDGET_BYTES,
    CANVAS_BYTES_PER_PIXEL,
    canvas_shape,
    check_patterns,
    check_positions,
    check_probe,
)
from ptycho_spec.errors import DataError

N = 64
SCAN = np.arange(10.0) * 8 + 40  # a 10-position line scan, 8 px apart


def refused(check, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError) as caught:
        check(*args, path="d.npz", **kwargs)
    return str(caught.value)


class TestCheckProbe:
    def test_a_probe_passes(self) -> None:
        """A finite probe with light in it passes, whatever its scale."""
        check_probe(np.full((N, N), 1e-30, np.complex64), path="d.npz")

    def test_zero(self) -> None:
        """An all-zero probe is refused, naming file and key."""
        message = refused(check_probe, np.zeros((N, N), np.complex64))
        assert message == "d.npz[probeGuess]: is zero everywhere: the probe illuminates nothing"

    def test_below_float32_resolution(self) -> None:
        """A probe whose mean amplitude float32 cannot resolve is refused with both numbers."""
        message = refused(check_probe, np.full((N, N), 1e-42, np.complex64))
        assert "mean amplitude, 1e-42, is below float32 resolution (1.18e-38)" in message

    def test_tiny_in_complex128(self) -> None:
        """A probe stored in double precision that complex64 would flush to zero is refused."""
        assert "below float32" in refused(check_probe, np.full((N, N), 1e-300, np.complex128))

    def test_non_finite(self) -> None:
        """NaN in the probe is refused."""
        probe = np.ones((N, N), np.complex64)
        probe[3, 3] = np.nan
        assert (
            refused(check_probe, probe) == "d.npz[probeGuess]: holds non-finite values (NaN or inf)"
        )

    def test_within_names_the_support(self) -> None:
        """``within`` says which support was dark (the probe mask)."""
        message = refused(check_probe, np.zeros((N, N)), key="probe", within=" inside the mask")
        assert (
            message
            == "d.npz[probe]: is zero everywhere inside the mask: the probe illuminates nothing"
        )


class TestCheckPatterns:
    def test_zero(self) -> None:
        """Patterns all zero are refused; ``over`` says which pixels were looked at."""
        message = refused(check_patterns, np.zeros((3, N, N)), key="diff3d", over=" on good pixels")
        assert (
            message == "d.npz[diff3d]: every pattern is zero on good pixels: nothing was measured"
        )

    def test_one_photon_is_enough(self) -> None:
        """A single non-zero value passes."""
        patterns = np.zeros((3, N, N))
        patterns[2, 5, 5] = 1
        check_patterns(patterns, path="d.npz", key="diff3d")


class TestCanvasShape:
    def test_from_origin_to_the_far_edge(self) -> None:
        """The canvas spans pixel (0, 0) to the far patch edge, plus one pixel."""
        assert canvas_shape(np.array([10.0, 100.0]), np.array([5.0]), N) == (5 + N + 1, 100 + N + 1)

    def test_negative_positions_widen_it(self) -> None:
        """Positions left of pixel 0 count too: their patches must fit as well."""
        assert canvas_shape(np.array([-50.0, 10.0]), np.array([0.0]), N)[1] == 60 + N + 1


class TestCheckPositions:
    def test_a_scan_passes(self) -> None:
        """An ordinary scan passes."""
        check_positions(SCAN, SCAN[::-1], n=N, path="d.npz")

    def test_outlier_is_named(self) -> None:
        """One position far from the rest is named by index, with the canvas and budget."""
        x = SCAN.copy()
        x[7] = 1e7
        message = refused(check_positions, x, SCAN, n=N)
        assert message.startswith("d.npz[xcoords]: positions span x 40 to 1e+07")
        assert "GiB to stitch, beyond the 4 GiB budget" in message
        assert "index 7 at (1e+07, 96) lies" in message and "an outlier?" in message

    def test_nanometres(self) -> None:
        """Positions whose steps exceed the patch suggest another unit."""
        message = refused(check_positions, SCAN * 1e4, SCAN * 1e4, n=N)
        assert "the median step between consecutive positions is 1.13e+05 px" in message
        assert "another unit (nm?)" in message

    def test_offset_origin(self) -> None:
        """A compact scan far from pixel (0, 0) is told to subtract its offset."""
        message = refused(check_positions, SCAN + 1e6, SCAN + 1e6, n=N)
        assert "start at (1e+06, 1e+06) px, far from pixel (0, 0)" in message
        assert message.startswith("d.npz[xcoords]: ")

    def test_patches_outside_the_object_frame(self) -> None:
        """A position whose whole patch lies before object pixel 0 is refused, naming it; one
        whose patch still reaches pixel 0 passes."""
        y = SCAN.copy()
        y[3] = -N / 2
        message = refused(check_positions, SCAN, y, n=N)
        assert message.startswith("d.npz[ycoords]: 1 of ")
        assert f"the first index 3 at ({SCAN[3]:.4g}, {-N / 2:.4g}) px" in message
        y[3] = 0.5 - N / 2
        check_positions(SCAN, y, n=N, path="d.npz")

    def test_the_larger_axis_is_named(self) -> None:
        """The key named is the axis that makes the canvas large."""
        y = SCAN.copy()
        y[0] = 5e7
        assert refused(check_positions, SCAN, y, n=N).startswith("d.npz[ycoords]: ")

    def test_non_finite(self) -> None:
        """A NaN position is refused with its index."""
        y = SCAN.copy()
        y[4] = np.nan
        message = refused(check_positions, SCAN, y, n=N)
        assert message == "d.npz[ycoords]: holds non-finite positions (the first at index 4)"

    def test_empty(self) -> None:
        """A scan without positions is refused."""
        message = refused(check_positions, np.zeros(0), np.zeros(0), n=N)
        assert message == "d.npz[xcoords]: holds no positions: a scan needs at least one pattern"

    def test_budget_edge(self) -> None:
        """A canvas of exactly the budget passes; one more row does not."""
        side = int(np.sqrt(CANVAS_BUDGET_BYTES // CANVAS_BYTES_PER_PIXEL))
        far = float(side - N - 1)
        check_positions(np.array([0.0, far]), np.array([0.0, far]), n=N, path="d.npz")
        with pytest.raises(DataError):
            check_positions(np.array([0.0, far]), np.array([0.0, far + 1]), n=N, path="d.npz")
