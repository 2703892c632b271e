"""Tests for ptycho_spec.facts: data headers, hashes, bundles and host facts."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from strategies import compile_text, toml, write_scan_npz

from ptycho_spec.errors import DataError
from ptycho_spec.facts import (
    InputPaths,
    cpu_threads,
    file_digest,
    npz_arrays,
    nvidia_device_count,
    read_bundle,
    read_host,
    read_inputs,
    read_probe_npz,
    read_scan_npz,
    torch_cuda_version,
)
from ptycho_spec.formats.bundle import dumps_bundle_file
from ptycho_spec.lock import dumps_lock


class TestReadScanNpz:
    def test_amplitude_file(self, tmp_path: Path) -> None:
        """Keys, shapes, dtypes, probe side and pattern count come from the file."""
        path = tmp_path / "a.npz"
        write_scan_npz(path, n_patterns=5, side=64)
        facts = read_scan_npz(str(path), "train")
        assert facts.probe_side == 64
        assert facts.scan is not None and (facts.scan.n_patterns, facts.scan.measurement) == (
            5,
            "amplitude",
        )
        assert facts.input.arrays["diff3d"].shape == (5, 64, 64)
        assert facts.input.arrays["probeGuess"].dtype == "complex64"

    def test_counts_file(self, tmp_path: Path) -> None:
        """Whole-numbered float data are counts; the mean counts per pattern is recorded."""
        path = tmp_path / "c.npz"
        write_scan_npz(path, n_patterns=4, side=64, counts=True)
        facts = read_scan_npz(str(path), "train")
        expected = float(np.load(path)["diff3d"].sum(axis=(1, 2), dtype=np.float64).mean())
        assert facts.scan is not None and facts.scan.measurement == "counts"
        assert facts.scan.mean_counts == expected

    def test_integer_dtype_is_counts(self, tmp_path: Path) -> None:
        """Integer diffraction is counts, whatever the values."""
        path = tmp_path / "i.npz"
        write_scan_npz(path)
        arrays = dict(np.load(path))
        arrays["diff3d"] = np.zeros((12, 64, 64), np.uint16)
        arrays["diff3d"][:, 32, 32] = 1  # whole numbers ≤ 1: counts only by their dtype
        np.savez(path, **arrays)
        facts = read_scan_npz(str(path), "train")
        assert facts.scan is not None and facts.scan.measurement == "counts"

    def test_probe_shapes(self, tmp_path: Path) -> None:
        """(N, N, 1) and (1, N, N) probes are accepted; others refused."""
        for shape in ((64, 64, 1), (1, 64, 64)):
            write_scan_npz(tmp_path / "p.npz", probe_shape=shape)
            assert read_scan_npz(str(tmp_path / "p.npz"), "train").probe_side == 64
        write_scan_npz(tmp_path / "p.npz", probe_shape=(64, 32))
        with pytest.raises(DataError, match=r"probeGuess\]: probeGuess must be square"):
            read_scan_npz(str(tmp_path / "p.npz"), "train")

    def test_negative_values(self, tmp_path: Path) -> None:
        """Negative diffraction is a data error naming the file and key."""
        path = tmp_path / "n.npz"
        write_scan_npz(path)
        arrays = dict(np.load(path))
        arrays["diff3d"][0, 0, 0] = -1
        np.savez(path, **arrays)
        with pytest.raises(DataError, match=r"n\.npz\[diff3d\]: holds negative values") as caught:
            read_scan_npz(str(path), "train")
        assert caught.value.exit_code == 4

    def test_non_finite_values(self, tmp_path: Path) -> None:
        """NaN in the coordinates is a data error."""
        path = tmp_path / "f.npz"
        write_scan_npz(path)
        arrays = dict(np.load(path))
        arrays["xcoords"][1] = np.nan
        np.savez(path, **arrays)
        with pytest.raises(DataError, match=r"\[xcoords\]: holds non-finite"):
            read_scan_npz(str(path), "train")

    @pytest.mark.parametrize(
        ("arrays", "error"),
        [
            (
                {"probeGuess": np.zeros((64, 64), np.complex64)},
                r"\[probeGuess\]: is zero everywhere",
            ),
            (
                {"probeGuess": np.full((64, 64), 1e-40, np.complex64)},
                r"\[probeGuess\]: its mean amplitude, 1e-40, is below float32",
            ),
            ({"diff3d": np.zeros((12, 64, 64), np.float32)}, r"\[diff3d\]: every pattern is zero:"),
            (
                {"valid_mask": np.zeros((64, 64), bool)},
                r"\[diff3d\]: every pattern is zero on the pixels valid_mask keeps",
            ),
            (
                {"xcoords": np.arange(12) * 1e4, "ycoords": np.arange(12) * 1e4},
                r"\[xcoords\]: positions span x 0 to 1.1e\+05 .* another unit",
            ),
        ],
        ids=["zero probe", "tiny probe", "zero patterns", "no good pixel", "positions in nm"],
    )
    def test_degenerate_values(self, tmp_path: Path, arrays: dict, error: str) -> None:
        """Well-formed arrays that cannot make a run are refused, naming file and key."""
        path = tmp_path / "d.npz"
        write_scan_npz(path, **arrays)
        with pytest.raises(DataError, match=error):
            read_scan_npz(str(path), "train")

    def test_missing_keys(self, tmp_path: Path) -> None:
        """The data contract's arrays must all be there."""
        np.savez(tmp_path / "m.npz", probeGuess=np.ones((64, 64), np.complex64))
        with pytest.raises(DataError, match=r"\[diff3d\]: no diffraction array"):
            read_scan_npz(str(tmp_path / "m.npz"), "train")

    def test_legacy_layout(self, tmp_path: Path) -> None:
        """A legacy (N, N, M) stack counts M patterns (the reader transposes it); its counts
        per pattern are summed over each pattern."""
        counts = np.arange(3, dtype=np.float64)[:, None, None] + np.full((3, 64, 64), 2.0)
        np.savez(
            tmp_path / "l.npz",
            diff3d=np.moveaxis(counts, 0, -1),
            xcoords=np.arange(3.0),
            ycoords=np.arange(3.0),
            probeGuess=np.ones((64, 64), np.complex64),
        )
        facts = read_scan_npz(str(tmp_path / "l.npz"), "train")
        assert facts.scan is not None and facts.scan.n_patterns == 3
        assert facts.scan.mean_counts == pytest.approx(counts.sum(axis=(1, 2)).mean())

    def test_ambiguous_cube(self, tmp_path: Path) -> None:
        """M = N: (M, N, N) and the legacy (N, N, M) cannot be told apart."""
        write_scan_npz(tmp_path / "c.npz", n_patterns=64, side=64)
        with pytest.raises(DataError, match="is ambiguous"):
            read_scan_npz(str(tmp_path / "c.npz"), "train")

    def test_side_mismatch(self, tmp_path: Path) -> None:
        """Patterns and probe must have the same side."""
        write_scan_npz(tmp_path / "s.npz", probe_shape=(32, 32))
        with pytest.raises(DataError, match="patterns are 64×64 but probeGuess is 32×32"):
            read_scan_npz(str(tmp_path / "s.npz"), "train")

    def test_stored_nphotons(self, tmp_path: Path) -> None:
        """A scalar nphotons array is read."""
        write_scan_npz(tmp_path / "n.npz", nphotons=np.array(1e6))
        facts = read_scan_npz(str(tmp_path / "n.npz"), "train")
        assert facts.scan is not None and facts.scan.nphotons == 1e6

    def test_object_arrays_are_refused(self, tmp_path: Path) -> None:
        """Arrays that need pickle are never loaded."""
        np.savez(tmp_path / "o.npz", probeGuess=np.array([{"a": 1}], dtype=object))
        with pytest.raises(DataError, match="object arrays are not allowed"):
            npz_arrays(str(tmp_path / "o.npz"))

    def test_not_an_archive(self, tmp_path: Path) -> None:
        """A file that is not an NPZ is a data error."""
        (tmp_path / "x.npz").write_text("hello")
        with pytest.raises(DataError, match="not a readable NPZ archive"):
            read_scan_npz(str(tmp_path / "x.npz"), "train")


class TestReadProbeNpz:
    def test_probe_only(self, tmp_path: Path) -> None:
        """A simulation probe file needs only probeGuess."""
        np.savez(tmp_path / "p.npz", probeGuess=np.ones((128, 128), np.complex64))
        facts = read_probe_npz(str(tmp_path / "p.npz"))
        assert (facts.probe_side, facts.input.role, facts.scan) == (128, "probe", None)
        assert facts.probe_central_share == 0.25  # a flat probe: (64/128)² of it on the box


class TestFileDigest:
    def test_matches_hashlib(self, tmp_path: Path) -> None:
        """The streamed digest is the sha256 of the bytes, with the size."""
        data = b"x" * (3 << 20)
        (tmp_path / "f").write_bytes(data)
        assert file_digest(str(tmp_path / "f")) == (
            "sha256:" + hashlib.sha256(data).hexdigest(),
            len(data),
        )


class TestReadInputs:
    def test_ptychodus_product_must_exist(self, tmp_path: Path) -> None:
        """A missing ptychodus product is a data error naming the file."""
        paths = {"product": str(tmp_path / "p.h5"), "diffraction": str(tmp_path / "d.h5")}
        with pytest.raises(DataError, match=r"p\.h5: no such file"):
            read_inputs(InputPaths(source="ptychodus", paths=paths))


def _bundle(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def _real_bundle(path: Path, lock_text: str, weights: bytes = b"x") -> str:
    """A bundle as the runner writes it, around any weight bytes (no torch needed)."""
    data = dumps_bundle_file(
        weights=weights, lock_text=lock_text, scaling={}, model={}, tool_version="test"
    )
    path.write_bytes(data)
    return str(path)


class TestReadBundle:
    def test_reads_the_lock(self, tmp_path: Path) -> None:
        """The bundle's lock.toml is read (no torch) and hashed."""
        lock = compile_text(toml({"data": {"source": "simulate", "n_groups": "all"}}))
        path = _real_bundle(tmp_path / "m.bundle", dumps_lock(lock))
        read, entry = read_bundle(path)
        assert read == lock
        assert entry.input.role == "bundle" and entry.input.size > 0

    def test_not_a_zip(self, tmp_path: Path) -> None:
        """A bundle that is not a zip is a data error (exit 4)."""
        (tmp_path / "m.bundle").write_text("no")
        with pytest.raises(DataError, match="not a model bundle"):
            read_bundle(str(tmp_path / "m.bundle"))

    def test_no_lock(self, tmp_path: Path) -> None:
        """A bundle without lock.toml is a data error."""
        with pytest.raises(DataError, match=r"no lock\.toml"):
            read_bundle(_bundle(tmp_path / "m.bundle", {"manifest.toml": b""}))

    def test_unsafe_member(self, tmp_path: Path) -> None:
        """Member names that climb out of the archive are refused."""
        with pytest.raises(DataError, match="unsafe member name"):
            read_bundle(_bundle(tmp_path / "m.bundle", {"../x": b"", "lock.toml": b""}))

    def test_edited_lock(self, tmp_path: Path) -> None:
        """A bundle whose lock fails its digest is a data error."""
        lock = compile_text(toml({"data": {"source": "simulate", "n_groups": "all"}}))
        text = dumps_lock(lock).replace("nepochs = 50", "nepochs = 51")
        with pytest.raises(DataError, match="digest mismatch"):
            read_bundle(_real_bundle(tmp_path / "m.bundle", text))

    def test_altered_weights(self, tmp_path: Path) -> None:
        """A weight byte that no longer matches the manifest's sha256 is refused, as the
        runner refuses it."""
        lock = compile_text(toml({"data": {"source": "simulate", "n_groups": "all"}}))
        path = tmp_path / "m.bundle"
        with zipfile.ZipFile(_real_bundle(path, dumps_lock(lock), b"weights")) as archive:
            members = {i.filename: archive.read(i) for i in archive.infolist()}
        members["state_dict.pt"] = b"weighta"  # rezipped: the zip's own CRC holds
        _bundle(path, members)
        with pytest.raises(DataError, match="manifest's sha256") as caught:
            read_bundle(str(path))
        assert caught.value.key == "state_dict.pt" and caught.value.exit_code == 4


class TestHost:
    def test_cuda_visible_devices(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """CUDA_VISIBLE_DEVICES limits the count; an invalid entry ends the list."""
        monkeypatch.setattr(
            "glob.glob",
            lambda pattern: (
                ["/proc/driver/nvidia/gpus/a", "b", "c", "d"] if "proc" in pattern else []
            ),
        )
        assert nvidia_device_count({}) == 4
        assert nvidia_device_count({"CUDA_VISIBLE_DEVICES": "0,1"}) == 2
        assert nvidia_device_count({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == 1
        assert nvidia_device_count({"CUDA_VISIBLE_DEVICES": ""}) == 0

    def test_cpu_build_of_torch(self) -> None:
        """This environment has a CPU build of torch: no CUDA version."""
        assert torch_cuda_version() is None

    def test_read_host(self) -> None:
        """On this CPU machine: one cpu device, versions read from package metadata."""
        host = read_host({}, full=True)
        assert host.accelerator == "cpu" and host.device_count == 1
        assert host.environment.torch is not None and host.environment.numpy is not None

    def test_cpu_threads(self) -> None:
        """OMP_NUM_THREADS decides the host's thread count when it is a positive integer, else
        the CPUs this process may run on."""
        assert cpu_threads({"OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS=3")
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every CPU
        usable = len(affinity(0)) if affinity else os.cpu_count()
        for environ in ({}, {"OMP_NUM_THREADS": "0"}, {"OMP_NUM_THREADS": "many"}):
            assert cpu_threads(environ)[0] == usable

    def test_light_host_skips_versions(self) -> None:
        """What validate reads leaves versions and git out."""
        assert read_host({}, full=False).environment.torch is None
