"""Per-patch complex gains that make overlapping patches agree before stitching."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pytest
import torch
from images import smooth_object

from ptycho_spec.schema import Canonical, Inference
from runner.data.simulate import raster_positions
from runner.infer.align import _components, _overlapping_pairs, align_gains
from runner.infer.reconstruct import stitch_groups
from runner.infer.stitch import stitch
from runner.models.pinn import PtychoPINN
from runner.physics.scaling import ScalingConstants
from runner.physics.shift import crop_patches

N, TRIM = 32, 8


def patches_of(obj: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return crop_patches(torch.from_numpy(obj), torch.from_numpy(x), torch.from_numpy(y), N).numpy()


def scan(seed: int, *, subpixel: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches ``(P, N, N)`` of a smooth object on a raster, and their positions."""
    obj = smooth_object(80, seed=seed).numpy()
    x, y = (v.astype(np.float64) for v in raster_positions(80, N, 6))
    if subpixel:
        rng = np.random.default_rng(seed)
        x, y = x + rng.uniform(-0.5, 0.5, x.shape), y + rng.uniform(-0.5, 0.5, y.shape)
    return patches_of(obj, x, y), x, y


def random_gains(count: int, seed: int, *, scales: bool = True) -> np.ndarray:
    """Phases anywhere on the circle, with scales in [0.5, 2] (or 1)."""
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(0.5, 2, count) if scales else 1.0
    return magnitude * np.exp(1j * rng.uniform(-np.pi, np.pi, count))


def gauge_error(gains: np.ndarray, expected: np.ndarray) -> float:
    """Largest deviation of gains / expected from one common complex factor."""
    ratio = gains / expected
    return float(np.abs(ratio / ratio.mean() - 1).max())


class TestAlignGains:
    def test_recovers_known_offsets_and_scales(self) -> None:
        """With ``scale``, phase offsets and scales of exact patches are undone up to one factor."""
        clean, x, y = scan(1)
        offsets = random_gains(len(x), seed=2)
        gains = align_gains(clean * offsets[:, None, None], x, y, trim=TRIM, scale=True)
        assert gauge_error(gains, 1 / offsets) < 1e-6

    def test_phases_only_by_default(self) -> None:
        """By default the gains have modulus 1 and undo the phase offsets, scales or not."""
        clean, x, y = scan(1)
        offsets = random_gains(len(x), seed=2)
        gains = align_gains(clean * offsets[:, None, None], x, y, trim=TRIM)
        np.testing.assert_allclose(np.abs(gains), 1, rtol=1e-12)
        phases = np.conj(offsets) / np.abs(offsets)
        assert gauge_error(gains, phases) < 1e-6

    @pytest.mark.parametrize("scale", [False, True])
    def test_gauge(self, scale: bool) -> None:
        """The gains' mean magnitude is 1 and the aligned patches' summed core is real, > 0."""
        clean, x, y = scan(3)
        patches = clean * random_gains(len(x), seed=4)[:, None, None]
        gains = align_gains(patches, x, y, trim=TRIM, scale=scale)
        total = (gains[:, None, None] * patches)[:, TRIM:-TRIM, TRIM:-TRIM].sum()
        assert np.abs(gains).mean() == pytest.approx(1.0)
        assert abs(np.angle(total)) < 1e-9

    def test_subpixel_positions_and_pixel_weight(self) -> None:
        """At sub-pixel positions with a probe-like weight, only interpolation error remains."""
        clean, x, y = scan(5, subpixel=True)
        offsets = random_gains(len(x), seed=6, scales=False)
        r2 = ((np.arange(N) - N / 2)[:, None] ** 2 + (np.arange(N) - N / 2)[None, :] ** 2) / 50
        gains = align_gains(clean * offsets[:, None, None], x, y, trim=4, pixel_weight=np.exp(-r2))
        assert gauge_error(gains, 1 / offsets) < 1e-2

    def test_aligned_stitch_equals_clean_stitch(self) -> None:
        """Stitching the aligned offset patches gives the clean stitch times one constant."""
        clean, x, y = scan(7, subpixel=True)
        patches = clean * random_gains(len(x), seed=8, scales=False)[:, None, None]
        gains = align_gains(patches, x, y, trim=TRIM)
        aligned, weight = stitch(patches * gains[:, None, None], x, y, trim=TRIM)
        reference, _ = stitch(clean, x, y, trim=TRIM)
        covered = weight > 0
        factor = np.vdot(reference[covered], aligned[covered]) / np.vdot(reference, reference)
        np.testing.assert_allclose(aligned[covered], factor * reference[covered], atol=1e-2)
        unaligned, _ = stitch(patches, x, y, trim=TRIM)
        assert np.abs(unaligned - factor * reference)[covered].max() > 0.1

    def test_disconnected_groups_are_fixed_separately(self) -> None:
        """Two scans far apart are each recovered, each with its own gauge."""
        clean, x, y = scan(9)
        x2, y2 = np.concatenate([x, x + 500]), np.concatenate([y, y])
        offsets = random_gains(len(x2), seed=10)
        both = np.concatenate([clean, clean]) * offsets[:, None, None]
        gains = align_gains(both, x2, y2, trim=TRIM, scale=True)
        half = len(x)
        for part in (slice(0, half), slice(half, None)):
            assert gauge_error(gains[part], 1 / offsets[part]) < 1e-6
            assert np.abs(gains[part]).mean() == pytest.approx(1.0)

    def test_isolated_patch_is_its_own_group(self) -> None:
        """A patch that overlaps nothing gets the gain of modulus 1 that makes its sum real."""
        clean, x, y = scan(11)
        patches = np.concatenate([clean, 3j * clean[:1]])
        gains = align_gains(patches, np.append(x, 900.0), np.append(y, 900.0), trim=TRIM)
        assert abs(np.angle(gains[-1] * patches[-1, TRIM:-TRIM, TRIM:-TRIM].sum())) < 1e-9
        assert abs(gains[-1]) == pytest.approx(1.0)
        assert gauge_error(gains[:-1], np.ones(len(x))) < 1e-6

    def test_dark_patches_keep_gain_one(self) -> None:
        """All-zero patches get gain 1 and do not disturb the others; all dark gives all ones."""
        clean, x, y = scan(12)
        offsets = random_gains(len(x), seed=13, scales=False)
        patches = clean * offsets[:, None, None]
        patches[4] = 0
        gains = align_gains(patches, x, y, trim=TRIM)
        lit = np.arange(len(x)) != 4
        assert gains[4] == 1
        assert gauge_error(gains[lit], 1 / offsets[lit]) < 1e-6
        np.testing.assert_array_equal(align_gains(np.zeros_like(clean), x, y, trim=TRIM), 1)

    def test_rejects_a_trim_that_keeps_nothing(self) -> None:
        """A trim of half the patch or more is refused, as by ``stitch``."""
        clean, x, y = scan(14)
        with pytest.raises(ValueError, match="trim must be in"):
            align_gains(clean, x, y, trim=N // 2)


class TestOverlappingPairs:
    def test_matches_brute_force(self) -> None:
        """The cell-grid search finds exactly the pairs of windows within reach on both axes."""
        base = np.random.default_rng(15).integers(-40, 40, size=(300, 2))
        first, second = _overlapping_pairs(base, reach=9)
        found = set(zip(first.tolist(), second.tolist(), strict=True))
        near = (np.abs(base[:, None] - base[None]) <= 9).all(axis=-1)
        expected = {(p, q) for p, q in zip(*np.nonzero(np.triu(near, 1)), strict=True)}
        assert found == expected and len(first) == len(found)


def union_find_partition(n: int, first: np.ndarray, second: np.ndarray) -> set[frozenset[int]]:
    """The reference partition: a sequential union-find."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        parent[root(a)] = root(b)
    groups: dict[int, set[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), set()).add(i)
    return {frozenset(g) for g in groups.values()}


class TestComponents:
    @pytest.mark.parametrize("seed", range(5))
    def test_matches_union_find(self, seed: int) -> None:
        """Labels partition random sparse graphs exactly as a sequential union-find does."""
        rng = np.random.default_rng(seed)
        first, second = rng.integers(0, 200, size=(2, int(rng.integers(0, 250))))
        label = _components(200, first, second)
        partition = {frozenset(np.flatnonzero(label == k).tolist()) for k in range(label.max() + 1)}
        assert partition == union_find_partition(200, first, second)

    def test_long_chain(self) -> None:
        """A chain of 10⁴ nodes in shuffled order is one component."""
        order = np.random.default_rng(0).permutation(10_000)
        assert _components(10_000, order[:-1], order[1:]).max() == 0


class TestStitchGroupsAlignment:
    def test_align_patches_undoes_offsets_before_stitching(
        self, make_model: Any, tiny_scan: Any
    ) -> None:
        """With inference.align_patches, offset patches stitch to the clean patches' object."""
        truth = tiny_scan.object.astype(np.complex128)
        x, y = tiny_scan.x_px, tiny_scan.y_px
        clean = crop_patches(torch.from_numpy(truth), torch.from_numpy(x), torch.from_numpy(y), 64)
        clean = clean.numpy().astype(np.complex64)
        offsets = random_gains(len(x), seed=16, scales=False).astype(np.complex64)
        c = attrs.evolve(
            Canonical(), model=make_model(), inference=Inference(trim=16, align_patches=True)
        )
        unit = ScalingConstants(
            input_scale=1.0, photon_scale=1.0, mean_photons=1.0, initial_gain=1.0
        )
        net = PtychoPINN(model=c.model, probe=torch.from_numpy(tiny_scan.probe), scaling=unit)
        got, weight = stitch_groups(
            (clean * offsets[:, None, None])[:, None],
            np.arange(len(x))[:, None],
            tiny_scan,
            c=c,
            net=net,
            canvas_shape=None,
        )
        expected, _ = stitch(clean, x, y, trim=16, canvas_shape=truth.shape)
        covered = weight > 0
        factor = np.vdot(expected[covered], got[covered]) / np.vdot(expected, expected)
        np.testing.assert_allclose(got[covered], factor * expected[covered], atol=1e-4)
