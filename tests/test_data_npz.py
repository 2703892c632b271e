"""The PtychoPINN NPZ data contract: reading, writing and every refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from ptycho_spec.errors import DataError
from runner.data.npz import read_npz, read_probe, write_npz
from runner.data.scan import Scan

M, N = 5, 16


def contract(**changes: Any) -> dict[str, np.ndarray]:
    """A valid file's arrays; ``None`` removes a key."""
    rng = np.random.default_rng(0)
    arrays = {
        "diff3d": rng.random((M, N, N)).astype(np.float32),
        "xcoords": np.linspace(20, 30, M),
        "ycoords": np.linspace(25, 35, M),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
        "objectGuess": np.ones((60, 60), np.complex64),
    }
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def save(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "scan.npz"
    np.savez(path, **contract(**changes))
    return path


def refused(path: Path, key: str | None, match: str, measurement: str = "amplitude") -> DataError:
    with pytest.raises(DataError, match=match) as info:
        read_npz(path, measurement=measurement)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert info.value.exit_code == 4
    return info.value


class TestReadNpz:
    def test_reads_the_contract(self, tmp_path: Path) -> None:
        """All keys land in the Scan with the contract's dtypes."""
        arrays = contract()
        scan = read_npz(save(tmp_path), measurement="amplitude")
        np.testing.assert_array_equal(scan.amplitude, arrays["diff3d"])
        np.testing.assert_array_equal(scan.x_px, arrays["xcoords"])
        assert scan.probe.dtype == np.complex64 and scan.object is not None
        np.testing.assert_array_equal(scan.scan_index, np.zeros(M, np.int64))
        assert scan.valid_mask is None and scan.N == N and len(scan) == M

    def test_counts_are_square_rooted(self, tmp_path: Path) -> None:
        """measurement = counts stores X = sqrt(counts), computed in float64."""
        counts = np.full((M, N, N), 65535, np.uint16)
        scan = read_npz(save(tmp_path, diff3d=counts), measurement="counts")
        np.testing.assert_allclose(scan.amplitude, np.sqrt(65535.0), rtol=1e-7)

    def test_diffraction_alias(self, tmp_path: Path) -> None:
        """'diffraction' is accepted in place of 'diff3d'."""
        arrays = contract()
        scan = read_npz(
            save(tmp_path, diff3d=None, diffraction=arrays["diff3d"]), measurement="amplitude"
        )
        np.testing.assert_array_equal(scan.amplitude, arrays["diff3d"])

    def test_legacy_layout_is_transposed(self, tmp_path: Path) -> None:
        """An (N, N, M) stack is read as (M, N, N)."""
        arrays = contract()
        scan = read_npz(
            save(tmp_path, diff3d=np.moveaxis(arrays["diff3d"], 0, -1)), measurement="amplitude"
        )
        np.testing.assert_array_equal(scan.amplitude, arrays["diff3d"])

    @pytest.mark.parametrize("shape", [(N, N, 1), (1, N, N)])
    def test_probe_layouts(self, tmp_path: Path, shape: tuple[int, ...]) -> None:
        """probeGuess may carry a singleton axis first or last."""
        probe = contract()["probeGuess"]
        scan = read_npz(save(tmp_path, probeGuess=probe.reshape(shape)), measurement="amplitude")
        np.testing.assert_array_equal(scan.probe, probe)

    def test_missing_diffraction(self, tmp_path: Path) -> None:
        refused(save(tmp_path, diff3d=None), "diff3d", "none of diff3d, diffraction")

    @pytest.mark.parametrize("key", ["xcoords", "ycoords", "probeGuess"])
    def test_missing_key(self, tmp_path: Path, key: str) -> None:
        refused(save(tmp_path, **{key: None}), key, "missing required key")

    def test_ambiguous_cube(self, tmp_path: Path) -> None:
        """M = N: (M, N, N) and the legacy (N, N, M) cannot be told apart."""
        path = save(
            tmp_path,
            diff3d=np.ones((N, N, N), np.float32),
            xcoords=np.zeros(N),
            ycoords=np.zeros(N),
        )
        refused(path, "diff3d", "ambiguous")

    def test_wrong_layout(self, tmp_path: Path) -> None:
        refused(save(tmp_path, diff3d=np.ones((M, N, N + 1), np.float32)), "diff3d", "expected")

    def test_wrong_rank(self, tmp_path: Path) -> None:
        refused(save(tmp_path, diff3d=np.ones((M, N * N), np.float32)), "diff3d", "3-D")

    def test_probe_side_differs(self, tmp_path: Path) -> None:
        """N ≠ probe side names probeGuess."""
        refused(
            save(tmp_path, probeGuess=np.ones((N // 2, N // 2), np.complex64)),
            "probeGuess",
            "patterns",
        )

    def test_probe_not_square(self, tmp_path: Path) -> None:
        refused(
            save(tmp_path, probeGuess=np.ones((N, N - 1), np.complex64)), "probeGuess", "not square"
        )

    def test_probe_bad_3d(self, tmp_path: Path) -> None:
        refused(
            save(tmp_path, probeGuess=np.ones((2, N, N), np.complex64)),
            "probeGuess",
            r"\(N, N, 1\)",
        )

    def test_non_finite(self, tmp_path: Path) -> None:
        data = contract()["diff3d"].copy()
        data[1, 2, 3] = np.nan
        refused(save(tmp_path, diff3d=data), "diff3d", "non-finite")

    def test_non_finite_coordinates(self, tmp_path: Path) -> None:
        refused(save(tmp_path, xcoords=np.array([1.0, np.inf, 2, 3, 4])), "xcoords", "non-finite")

    def test_negative_values(self, tmp_path: Path) -> None:
        data = contract()["diff3d"].copy()
        data[0, 0, 0] = -1
        refused(save(tmp_path, diff3d=data), "diff3d", "negative")
        refused(save(tmp_path, diff3d=data), "diff3d", "negative", measurement="counts")

    def test_dark_probe(self, tmp_path: Path) -> None:
        """A probe that illuminates nothing is refused on loading, as at compile time."""
        refused(save(tmp_path, probeGuess=np.zeros((N, N), np.complex64)), "probeGuess", "zero")

    def test_positions_beyond_the_canvas_budget(self, tmp_path: Path) -> None:
        """Positions a stitching canvas could not hold are refused, the outlier named."""
        x = np.linspace(20, 30, M)
        x[2] = 1e9
        refused(save(tmp_path, xcoords=x), "xcoords", r"beyond the 4 GiB budget; index 2")

    def test_coordinate_lengths_differ(self, tmp_path: Path) -> None:
        refused(save(tmp_path, ycoords=np.zeros(M - 1)), "ycoords", "entries")

    def test_complex_diffraction(self, tmp_path: Path) -> None:
        refused(save(tmp_path, diff3d=np.ones((M, N, N), np.complex64)), "diff3d", "dtype")

    def test_scan_index_length(self, tmp_path: Path) -> None:
        refused(save(tmp_path, scan_index=np.zeros(M + 1, np.int64)), "scan_index", "shape")

    def test_object_rank(self, tmp_path: Path) -> None:
        refused(save(tmp_path, objectGuess=np.ones((2, 3, 4), np.complex64)), "objectGuess", "2-D")

    def test_conflicting_aliases(self, tmp_path: Path) -> None:
        data = contract()["diff3d"]
        refused(save(tmp_path, diffraction=data + 1), "diff3d", "both present")

    def test_pickled_arrays_are_refused(self, tmp_path: Path) -> None:
        """Object arrays need pickle, which stays off."""
        refused(save(tmp_path, _metadata=np.array([{"a": 1}], dtype=object)), "_metadata", "pickle")

    def test_not_an_npz(self, tmp_path: Path) -> None:
        path = tmp_path / "scan.npz"
        path.write_text("not a zip")
        refused(path, None, "cannot read")

    def test_missing_file(self, tmp_path: Path) -> None:
        refused(tmp_path / "absent.npz", None, "cannot read")


class TestWriteNpz:
    def test_round_trip(self, tmp_path: Path, tiny_scan: Scan) -> None:
        """write → read gives back every array."""
        mask = np.ones((tiny_scan.N, tiny_scan.N), bool)
        mask[0, 0] = False
        scan = attrs.evolve(tiny_scan, scan_index=np.arange(len(tiny_scan)), valid_mask=mask)
        path = tmp_path / "out" / "scan.npz"
        write_npz(scan, path, nphotons=1e6)
        back = read_npz(path, measurement="amplitude")
        for name in ("amplitude", "x_px", "y_px", "probe", "object", "scan_index", "valid_mask"):
            np.testing.assert_array_equal(getattr(back, name), getattr(scan, name))
        with np.load(path) as npz:
            assert float(npz["nphotons"]) == 1e6
        assert [p.name for p in path.parent.iterdir()] == ["scan.npz"]  # no temporary left

    def test_counts_round_trip(self, tmp_path: Path, tiny_scan: Scan) -> None:
        """Written as counts (X²), read as counts (sqrt): the amplitudes come back."""
        path = tmp_path / "scan.npz"
        write_npz(tiny_scan, path, measurement="counts")
        back = read_npz(path, measurement="counts")
        np.testing.assert_allclose(back.amplitude, tiny_scan.amplitude, rtol=1e-6)


class TestReadProbe:
    def test_probe_only_file(self, tmp_path: Path) -> None:
        """A file with just probeGuess is a valid probe source."""
        path = tmp_path / "probe.npz"
        probe = contract()["probeGuess"]
        np.savez(path, probeGuess=probe[..., None])
        np.testing.assert_array_equal(read_probe(path), probe)


class TestScan:
    def test_rejects_inconsistent_shapes(self, tiny_scan: Scan) -> None:
        """Shape and dtype violations raise when a Scan is built."""
        with pytest.raises(ValueError, match="probe"):
            Scan(
                amplitude=tiny_scan.amplitude,
                x_px=tiny_scan.x_px,
                y_px=tiny_scan.y_px,
                probe=tiny_scan.probe[:8, :8],
            )
        with pytest.raises(ValueError, match="float32"):
            Scan(
                amplitude=tiny_scan.amplitude.astype(np.float64),
                x_px=tiny_scan.x_px,
                y_px=tiny_scan.y_px,
                probe=tiny_scan.probe,
            )

    def test_masked_amplitude(self, tiny_scan: Scan) -> None:
        """Bad pixels read 0 in the network's input."""
        mask = np.ones((64, 64), bool)
        mask[5, 6] = False
        scan = attrs.evolve(tiny_scan, valid_mask=mask)
        assert float(np.abs(scan.masked_amplitude()[:, 5, 6]).max()) == 0.0
        np.testing.assert_array_equal(scan.masked_amplitude()[:, 0], tiny_scan.amplitude[:, 0])
