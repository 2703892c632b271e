"""Grouping of scan positions and the dataset amplitude scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_spec.errors import DataError
from runner.data.grouping import group_scan, input_scale, nearest_neighbors
from runner.data.simulate import raster_positions

X, Y = raster_positions(64 + 9 * 4, 64, 4)  # a 10 × 10 raster, 4 px step


def group(**kw):
    args = {"gridsize": 2, "n_groups": 30, "neighbor_count": 4, "sequential": False, "seed": 7} | kw
    return group_scan(X, Y, **args)


class TestGroupScan:
    def test_gridsize_one_groups_are_the_seeds(self) -> None:
        """g = 1: each group is one pattern, drawn without replacement; relative coordinates are 0."""
        g = group(gridsize=1, neighbor_count=None, n_groups=50)
        assert g.indices.shape == (50, 1)
        assert len(set(g.indices[:, 0].tolist())) == 50
        assert np.all(g.relative == 0)
        np.testing.assert_array_equal(g.offsets, np.stack([X, Y], -1)[g.indices[:, 0]])

    def test_raster_groups_are_the_axial_neighbours(self) -> None:
        """K = 4 on an interior raster point: the group is its 4 neighbours one step away, centred
        on the seed, which is not itself a member."""
        g = group(n_groups="all", sequential=True)  # row i is seeded by pattern i
        interior = np.nonzero((X > 32) & (X < 32 + 36) & (Y > 32) & (Y < 32 + 36))[0]
        assert len(interior) == 64
        for i in interior:
            np.testing.assert_allclose(np.hypot(*(g.coords[i] - (X[i], Y[i])).T), 4.0)
            np.testing.assert_allclose(g.offsets[i], (X[i], Y[i]))
            assert i not in g.indices[i]

    def test_relative_sign_convention(self) -> None:
        """relative = −(coords − offsets), offsets the group mean."""
        g = group()
        np.testing.assert_allclose(g.offsets, g.coords.mean(axis=1))
        np.testing.assert_allclose(g.relative, -(g.coords - g.offsets[:, None]))
        np.testing.assert_allclose(g.coords, np.stack([X[g.indices], Y[g.indices]], -1))

    def test_members_distinct_and_exclude_the_seed_pool(self) -> None:
        """C distinct patterns per group, chosen among the seed's K nearest other patterns."""
        g = group(neighbor_count=6, n_groups="all")
        assert all(len(set(row)) == 4 for row in g.indices.tolist())
        pool = nearest_neighbors(np.stack([X, Y], -1), np.arange(len(X)), 6)
        assert all(
            set(row) <= set(p) for row, p in zip(g.indices.tolist(), pool.tolist(), strict=True)
        )

    def test_seeded(self) -> None:
        """Same seed, same groups; another seed, other groups."""
        np.testing.assert_array_equal(group().indices, group().indices)
        assert not np.array_equal(group().indices, group(seed=8).indices)

    def test_sequential_takes_the_first_seeds(self) -> None:
        """Sequential sampling seeds groups with patterns 0 … n_groups − 1 in order."""
        g = group(gridsize=1, neighbor_count=None, n_groups=5, sequential=True)
        np.testing.assert_array_equal(g.indices[:, 0], np.arange(5))

    def test_subsample_restricts_the_pool(self) -> None:
        """With n_subsample every member comes from the subsample."""
        g = group(n_subsample=40, n_groups="all", neighbor_count=4)
        assert len(g) == 40
        assert len(np.unique(g.indices)) <= 40

    def test_too_many_groups(self) -> None:
        """More groups than patterns is a data error naming n_groups and the source."""
        with pytest.raises(DataError, match=r"scan\.npz\[n_groups\]"):
            group(n_groups=101, source="scan.npz")

    def test_neighbour_count_below_c(self) -> None:
        """K < C cannot form a group."""
        with pytest.raises(DataError, match="neighbor_count"):
            group(neighbor_count=3)

    def test_subsample_too_large(self) -> None:
        with pytest.raises(DataError, match="n_subsample"):
            group(n_subsample=101)


class TestNearestNeighbors:
    @settings(max_examples=25, deadline=None)
    @given(st.integers(0, 2**31 - 1), st.integers(1, 6))
    def test_matches_sorted_distances(self, seed: int, k: int) -> None:
        """Equals a full stable sort by (distance, index), self excluded, ties included."""
        rng = np.random.default_rng(seed)
        pts = rng.integers(0, 6, size=(30, 2)).astype(np.float64)  # many exact ties
        seeds = rng.choice(30, 10, replace=False)
        got = nearest_neighbors(pts, seeds, k)
        for row, s in zip(got, seeds, strict=True):
            d = np.square(pts - pts[s]).sum(-1)
            d[s] = np.inf
            np.testing.assert_array_equal(row, np.argsort(d, kind="stable")[:k])


class TestInputScale:
    def test_normalizes_mean_energy(self) -> None:
        """After scaling by r the mean Σx² is (N/2)²."""
        amp = np.random.default_rng(0).random((7, 64, 64), dtype=np.float32)
        r = input_scale(amp, 64)
        assert ((r * amp.astype(np.float64)) ** 2).sum(axis=(1, 2)).mean() == pytest.approx(
            1024.0, rel=1e-9
        )

    def test_integer_data_do_not_overflow(self) -> None:
        """uint16 values are squared in float64."""
        amp = np.full((2, 64, 64), 60000, dtype=np.uint16)
        assert input_scale(amp, 64) == pytest.approx(32 / (64 * 60000))

    def test_all_zero_raises(self) -> None:
        with pytest.raises(DataError, match="zero"):
            input_scale(np.zeros((2, 64, 64), np.float32), 64)
