"""Simulated data: lines object, disk probe, raster scans, Poisson noise, resolved-run scans."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import numpy as np
import pytest
from skimage.draw import line  # test-only: the reference's line rasterizer

from ptycho_spec.errors import DataError
from ptycho_spec.schema import Canonical, Data, Model, Seeds, Simulate
from runner.data.simulate import (
    _line_pixels,
    disk_probe,
    lines_object,
    noiseless_amplitude,
    raster_positions,
    simulate_scan,
    simulate_scans,
)


class TestLinePixels:
    def test_matches_skimage(self) -> None:
        """Every segment rasterizes to skimage.draw.line's pixels, in its order."""
        ends = np.random.default_rng(0).integers(0, 60, (200, 4))
        ends[:5, 2:] = ends[:5, :2]  # single points
        rows, cols = _line_pixels(ends)
        start = 0
        for e in ends:
            r, c = line(*e)
            np.testing.assert_array_equal(rows[start : start + len(r)], r)
            np.testing.assert_array_equal(cols[start : start + len(r)], c)
            start += len(r)
        assert start == len(rows)


class TestLinesObject:
    def test_seeded(self) -> None:
        """Same seed, same object; another seed, another object."""
        np.testing.assert_array_equal(lines_object(48, seed=1), lines_object(48, seed=1))
        assert not np.array_equal(lines_object(48, seed=1), lines_object(48, seed=2))

    def test_recipe(self) -> None:
        """Amplitude in (0, 1] with maximum 1; phase = π·tanh((A − max A/2)/(3·mean A))."""
        obj = lines_object(64, seed=3)
        amp = np.abs(obj).astype(np.float64)
        assert obj.shape == (64, 64) and obj.dtype == np.complex64
        assert amp.max() == pytest.approx(1.0) and amp.min() > 0
        expected = math.pi * np.tanh((amp - amp.max() / 2) / (3 * amp.mean()))
        np.testing.assert_allclose(np.angle(obj), expected, atol=1e-5)

    def test_has_structure(self) -> None:
        """Lines give texture: neither amplitude nor phase is flat."""
        obj = lines_object(128, seed=4)
        assert np.abs(obj).std() > 0.02 and np.angle(obj).std() > 0.02


class TestDiskProbe:
    def test_radius_and_centre(self) -> None:
        """A real disk of radius ≈ 0.17·N, symmetric about (N − 1)/2."""
        probe = disk_probe(64)
        assert probe.dtype == np.complex64 and np.all(probe.imag == 0)
        radius = math.sqrt((np.abs(probe) > 0.5).sum() / math.pi)
        assert radius == pytest.approx(0.17 * 64, rel=0.05)
        np.testing.assert_allclose(probe, probe[::-1, ::-1], atol=1e-7)


class TestRasterPositions:
    def test_valid_windows(self) -> None:
        """Windows start at 0, step, … ≤ size − N; positions are corner + N/2, rows outer."""
        x, y = raster_positions(100, 64, 8)
        corners = np.arange(0, 37, 8)
        assert len(x) == len(corners) ** 2
        np.testing.assert_array_equal(x[: len(corners)], corners + 32)
        np.testing.assert_array_equal(y[: len(corners)], np.full(len(corners), 32.0))
        assert x.min() - 32 >= 0 and x.max() + 32 <= 100

    def test_too_small(self) -> None:
        with pytest.raises(ValueError, match="holds no"):
            raster_positions(63, 64, 4)


class TestSimulateScan:
    def test_photon_budget(self, tiny_scan) -> None:
        """Mean photons per pattern ≈ nphotons: s²·mean ΣX² with s from the noiseless patterns."""
        clean = noiseless_amplitude(
            tiny_scan.object, tiny_scan.probe, tiny_scan.x_px, tiny_scan.y_px, probe_scale=4.0
        ).numpy()
        s2 = 1e6 / (clean**2).sum(axis=(1, 2)).mean()
        photons = s2 * (tiny_scan.amplitude.astype(np.float64) ** 2).sum(axis=(1, 2))
        assert photons.mean() == pytest.approx(1e6, rel=1e-3)
        counts = s2 * tiny_scan.amplitude.astype(np.float64) ** 2
        np.testing.assert_allclose(counts, np.rint(counts), atol=0.1)  # stored X = sqrt(K)/s

    def test_noise_is_seeded(self) -> None:
        """The same noise seed gives identical patterns, another seed others."""
        obj, probe = lines_object(80, seed=1), disk_probe(64)
        x, y = raster_positions(80, 64, 8)
        a = simulate_scan(obj, probe, x, y, nphotons=1e4, probe_scale=4.0, noise_seed=1)
        b = simulate_scan(obj, probe, x, y, nphotons=1e4, probe_scale=4.0, noise_seed=1)
        c = simulate_scan(obj, probe, x, y, nphotons=1e4, probe_scale=4.0, noise_seed=2)
        np.testing.assert_array_equal(a.amplitude, b.amplitude)
        assert not np.array_equal(a.amplitude, c.amplitude)

    def test_high_dose_approaches_noiseless(self) -> None:
        """At 1e12 photons the stored amplitudes are the noiseless |F(O·P̂)| to 1e-4."""
        obj, probe = lines_object(72, seed=1), disk_probe(64)
        x, y = raster_positions(72, 64, 8)
        scan = simulate_scan(obj, probe, x, y, nphotons=1e12, probe_scale=4.0, noise_seed=0)
        clean = noiseless_amplitude(obj, probe, x, y, probe_scale=4.0).numpy()
        np.testing.assert_allclose(scan.amplitude, clean, atol=1e-4 * clean.max())


def canonical(**sim: object) -> Canonical:
    simulate = Simulate(object_size=80, scan_step_train=8, scan_step_test=16, nphotons=1e5, **sim)
    return Canonical(
        seeds=Seeds(simulate_train=11, simulate_test=12, noise=13),
        data=Data(source="simulate", simulate=simulate),
        model=Model(N=64, object_big=False),
    )


class TestSimulateScans:
    def test_train_and_independent_test(self) -> None:
        """Train and test objects differ; steps and seeds come from the resolved run."""
        train, test = simulate_scans(canonical())
        assert test is not None
        assert len(train) == 3 * 3 and len(test) == 2 * 2
        assert not np.array_equal(train.object, test.object)
        again, _ = simulate_scans(canonical())
        np.testing.assert_array_equal(again.amplitude, train.amplitude)

    def test_seeds_change_objects(self) -> None:
        """Another simulate_train seed gives another training object."""
        a, _ = simulate_scans(canonical())
        run = canonical()
        b, _ = simulate_scans(attrs.evolve(run, seeds=attrs.evolve(run.seeds, simulate_train=99)))
        assert not np.array_equal(a.object, b.object)

    def test_objects_tile_along_x(self) -> None:
        """n objects sit side by side; each pattern's window lies in its own tile (scan_index)."""
        train, test = simulate_scans(canonical(n_train_objects=3, n_test_objects=0))
        assert test is None
        assert train.object.shape == (80, 240)
        assert len(train) == 3 * 9
        tile = train.scan_index
        np.testing.assert_array_equal(np.bincount(tile), [9, 9, 9])
        assert np.all(train.x_px - 32 >= 80 * tile) and np.all(train.x_px + 32 <= 80 * (tile + 1))

    def test_probe_from_npz(self, tmp_path: Path) -> None:
        """A probe file's probeGuess replaces the disk; a wrong side is a data error."""
        path = tmp_path / "probe.npz"
        probe = (disk_probe(64) * np.exp(0.3j)).astype(np.complex64)
        np.savez(path, probeGuess=probe)
        train, _ = simulate_scans(canonical(probe="probe.npz"), {"probe": str(path)})
        np.testing.assert_array_equal(train.probe, probe)
        np.savez(path, probeGuess=probe[:32, :32])
        with pytest.raises(DataError, match="probeGuess"):
            simulate_scans(canonical(probe="probe.npz"), {"probe": str(path)})
