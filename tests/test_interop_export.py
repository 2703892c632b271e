"""``ptycho-spec export-npz``: a run's scan in PtychoPINN's NPZ contract, round-tripped through
``read_npz`` and through the compiler's facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ptychodus_data import simulated_files, write_spec
from runspec import write_spec as write_simulated_spec

from ptycho_spec.cli import main
from ptycho_spec.compile import compile_spec

PTYCHOPINN_KEYS = {"diff3d", "xcoords", "ycoords", "probeGuess", "scan_index"}


def spec_on(tmp_path: Path, npz: Path) -> Path:
    path = tmp_path / "on_export.toml"
    path.write_text(
        f'spec_version = 1\n[run]\ntask = "train"\n[data]\nsource = "npz"\n'
        f'train_file = "{npz}"\nn_groups = "all"\n'
    )
    return path


class TestSimulated:
    @pytest.mark.parametrize("which", ["train", "test"])
    def test_round_trip(self, tmp_path: Path, which: str) -> None:
        """The exported scan is the one the run simulates, and a spec on the file resolves
        the same N, photons and pattern count."""
        from runner.data.npz import read_npz
        from runner.run.prepare import load_scans

        spec = write_simulated_spec(tmp_path)
        out = tmp_path / f"{which}.npz"
        assert main(["export-npz", str(spec), "-o", str(out), "--which", which]) == 0
        with np.load(out) as npz:
            assert PTYCHOPINN_KEYS | {"objectGuess", "nphotons"} <= set(npz.files)
            assert npz["diff3d"].dtype == np.float32 and npz["xcoords"].dtype == np.float64
        lock = compile_spec(str(spec))
        expected = getattr(load_scans(lock.resolved.canonical, {}), which)
        scan = read_npz(out, measurement="amplitude")
        np.testing.assert_array_equal(scan.amplitude, expected.amplitude)
        np.testing.assert_array_equal(scan.x_px, expected.x_px)
        np.testing.assert_array_equal(scan.object, expected.object)
        again = compile_spec(str(spec_on(tmp_path, out))).resolved.canonical
        assert again.model.N == lock.resolved.canonical.model.N
        assert again.data.measurement == "amplitude"
        assert again.training.nphotons == lock.resolved.canonical.data.simulate.nphotons
        assert again.data.n_groups == len(expected)

    def test_no_test_data(self, tmp_path: Path) -> None:
        """Asking for test data a run does not define exits 2."""
        spec = write_simulated_spec(tmp_path)
        out = tmp_path / "x.npz"
        assert (
            main(
                [
                    "export-npz",
                    str(spec),
                    "-o",
                    str(out),
                    "--which",
                    "test",
                    "--set",
                    "data.simulate.n_test_objects=0",
                    "--set",
                    'run.task="train"',
                ]
            )
            == 2
        )
        assert not out.exists()


class TestPtychodus:
    def test_counts_become_amplitudes(self, tmp_path: Path, tiny_scan: Any) -> None:
        """ptychodus counts export as amplitudes in object pixels, with the bad-pixel mask and
        the photons per pattern; a spec on the file infers the same photons."""
        from runner.data.npz import read_npz

        bad = np.zeros((64, 64), bool)
        bad[7, 9] = True
        sim = simulated_files(tmp_path, tiny_scan, bad=bad)
        spec = write_spec(tmp_path, sim)
        out = tmp_path / "pd.npz"
        assert main(["export-npz", str(spec), "-o", str(out)]) == 0
        scan = read_npz(out, measurement="amplitude")
        np.testing.assert_allclose(scan.x_px, tiny_scan.x_px, atol=1e-9)
        np.testing.assert_allclose(scan.amplitude**2, np.where(bad, 0, sim.counts), rtol=1e-6)
        assert (scan.valid_mask == ~bad).all() and scan.object is None
        nphotons = compile_spec(str(spec)).resolved.canonical.training.nphotons
        again = compile_spec(str(spec_on(tmp_path, out))).resolved.canonical
        assert again.training.nphotons == pytest.approx(nphotons, rel=1e-6)
