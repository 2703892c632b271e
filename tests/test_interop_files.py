"""ptychodus products and diffraction files without ptychodus: reading, pairing, the compiler's
facts and rules for ``data.source = "ptychodus"``, and a run that writes ``reconstruction.h5``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from ptychodus_data import (
    CENTER_M,
    PIXEL_M,
    simulated_files,
    write_diffraction,
    write_product,
    write_spec,
)

from ptycho_spec.compile import compile_spec
from ptycho_spec.errors import DataError, SpecError
from ptycho_spec.formats import ptychodus as pf

PROBE = np.ones((64, 64), np.complex64)


def product_with(tmp_path: Path, **changes: Any) -> Path:
    """A small valid product (3 positions, 96 × 96 object) with ``changes``."""
    fields: dict[str, Any] = {
        "probe": PROBE,
        "index": np.array([0, 1, 2]),
        "x_m": np.zeros(3),
        "y_m": np.zeros(3),
        "obj": np.ones((96, 96), np.complex64),
    }
    return write_product(tmp_path / "p.h5", **{**fields, **changes})


class TestReadProduct:
    def test_frame_and_probe(self, tmp_path: Path) -> None:
        """The object frame, the probe's first mode and the positions are read as written."""
        product = pf.read_product(str(product_with(tmp_path)))
        assert (product.N, product.object_shape) == (64, (96, 96))
        assert (product.pixel_m, product.center_m) == ((PIXEL_M, PIXEL_M), CENTER_M)
        assert product.object is None and product.probe.dtype == np.complex64

    def test_multimode_probe_is_noted(self, tmp_path: Path) -> None:
        """Of a 2-mode probe the first mode is used, with a note of the power left out."""
        modes = np.stack([2 * PROBE, PROBE])  # powers 4 : 1
        product = pf.read_product(str(product_with(tmp_path, probe=modes)))
        np.testing.assert_array_equal(product.probe, 2 * PROBE)
        assert product.probe_note is not None
        assert (
            "2 modes" in product.probe_note and "(80% of the probe's power)" in product.probe_note
        )
        assert pf.read_product(str(product_with(tmp_path))).probe_note is None

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"far_field": False}, r"\[far_field\]: is false: near-field"),
            ({"obj": np.ones((2, 96, 96), np.complex64)}, r"\[object\]: has 2 layers"),
            ({"obj": np.ones((96, 96))}, r"\[object\]: must be complex"),
            ({"probe_pixel_m": (2e-8, 2e-8)}, r"\[probe\]: probe pixels"),
            ({"x_m": np.array([0.0, np.nan, 0.0])}, r"\[probe_position_x_m\]: holds non-finite"),
        ],
    )
    def test_refuses(self, tmp_path: Path, changes: dict[str, Any], message: str) -> None:
        """What PtychoPINN cannot model, and broken arrays, are data errors naming the key."""
        with pytest.raises(DataError, match=message):
            pf.read_product(str(product_with(tmp_path, **changes)))

    def test_missing_dataset(self, tmp_path: Path) -> None:
        """A product without positions names the missing dataset."""
        path = product_with(tmp_path)
        with h5py.File(path, "r+") as h5:
            del h5["probe_position_y_m"]
        with pytest.raises(DataError, match=r"p\.h5\[probe_position_y_m\]: missing dataset"):
            pf.read_product(str(path))

    def test_not_hdf5(self, tmp_path: Path) -> None:
        """A file that is not HDF5 is a data error."""
        (tmp_path / "p.h5").write_bytes(b"not hdf5")
        with pytest.raises(DataError, match="not a readable HDF5 file"):
            pf.read_product(str(tmp_path / "p.h5"))


class TestReadDiffraction:
    def test_npz_defaults(self, tmp_path: Path) -> None:
        """An NPZ with patterns only gets indexes 0 … M−1 and no bad pixels."""
        path = write_diffraction(tmp_path / "d.npz", np.ones((3, 64, 64), np.uint16))
        data = pf.read_diffraction(str(path))
        assert data.indexes.tolist() == [0, 1, 2] and not data.bad_pixels.any()

    def test_bad_pixel_shape(self, tmp_path: Path) -> None:
        """A mask of another shape than the patterns is refused."""
        path = write_diffraction(
            tmp_path / "d.h5", np.ones((3, 64, 64)), bad=np.zeros((32, 32), bool)
        )
        with pytest.raises(DataError, match=r"d\.h5\[bad_pixels\]: must be a boolean"):
            pf.read_diffraction(str(path))

    def test_unreadable_patterns(self, tmp_path: Path) -> None:
        """A dataset h5py cannot decode (here a damaged compressed chunk) is a data error."""
        path = tmp_path / "d.h5"
        with h5py.File(path, "w") as h5:
            h5.create_dataset(
                "patterns",
                data=np.ones((4, 64, 64), np.uint16),
                compression="gzip",
                chunks=(1, 64, 64),
            )
            offset = h5["patterns"].id.get_chunk_info(1).byte_offset
        with open(path, "r+b") as f:
            f.seek(offset + 4)
            f.write(b"\xff" * 64)
        with pytest.raises(DataError, match=r"d\.h5\[patterns\]: cannot read the dataset"):
            pf.read_diffraction(str(path))


class TestPair:
    def test_as_ptychodus_pairs(self, tmp_path: Path) -> None:
        """Duplicate position indexes average, gaps interpolate, the rest is dropped."""
        product = pf.read_product(
            str(
                product_with(
                    tmp_path,
                    index=np.array([10, 10, 12]),
                    x_m=np.array([1.0, 3.0, 6.0]),
                    y_m=np.array([0.0, 0.0, 4.0]),
                )
            )
        )
        patterns = np.zeros((5, 64, 64), np.uint16)
        diffraction = pf.read_diffraction(
            str(write_diffraction(tmp_path / "d.h5", patterns, index=np.array([11, -1, 9, 12, 10])))
        )
        paired = pf.pair(product, diffraction)
        assert paired.rows.tolist() == [0, 3, 4]
        assert paired.x_m.tolist() == [4.0, 6.0, 2.0] and paired.y_m.tolist() == [2.0, 4.0, 0.0]

    def test_no_overlap(self, tmp_path: Path) -> None:
        """Patterns whose indexes match no position are a data error naming both files."""
        product = pf.read_product(str(product_with(tmp_path)))
        path = write_diffraction(tmp_path / "d.h5", np.zeros((2, 64, 64)), index=np.array([7, 8]))
        with pytest.raises(DataError, match=r"d\.h5\[indexes\]: no pattern index in \[0, 2\]"):
            pf.pair(product, pf.read_diffraction(str(path)))

    def test_patterns_fit_the_probe(self, tmp_path: Path) -> None:
        """Patterns of another size than the probe are refused."""
        product = pf.read_product(str(product_with(tmp_path)))
        path = write_diffraction(tmp_path / "d.h5", np.zeros((3, 32, 32)))
        with pytest.raises(
            DataError, match=r"d\.h5\[patterns\]: patterns are 32×32 but the probe is 64×64"
        ):
            pf.pair(product, pf.read_diffraction(str(path)))


class TestCounts:
    def test_bad_pixels_may_hold_anything(self) -> None:
        """Flags and NaN on bad pixels become 0; good pixels are square-rooted."""
        patterns = np.array([[[4.0, -1.0], [np.nan, 9.0]]])
        bad = np.array([[False, True], [True, False]])
        amplitude = pf.counts_to_amplitude(patterns, bad, path="d.h5")
        assert amplitude.tolist() == [[[2.0, 0.0], [0.0, 3.0]]]

    def test_negative_good_pixel(self) -> None:
        """A negative count on a good pixel is a data error."""
        with pytest.raises(DataError, match="1 good pixels hold negative"):
            pf.counts_to_amplitude(np.array([[[-1.0]]]), np.zeros((1, 1), bool), path="d.h5")


class TestReadScan:
    def test_positions_in_the_product_frame(self, tmp_path: Path, tiny_scan: Any) -> None:
        """Metres map back onto the object pixels the patterns were simulated at."""
        from runner.interop.ptychodus_product import read_scan

        bad = np.zeros((64, 64), bool)
        bad[3, 5] = True
        sim = simulated_files(tmp_path, tiny_scan, bad=bad)
        scan, product = read_scan(str(sim.product), str(sim.diffraction), labels=False)
        np.testing.assert_allclose(scan.x_px, tiny_scan.x_px, atol=1e-9)
        np.testing.assert_allclose(scan.y_px, tiny_scan.y_px, atol=1e-9)
        np.testing.assert_allclose(scan.amplitude**2, np.where(bad, 0, sim.counts), rtol=1e-6)
        assert (scan.valid_mask == ~bad).all() and scan.object is None
        assert product.object_shape == tiny_scan.object.shape


class TestCompile:
    def test_facts(self, tmp_path: Path, tiny_scan: Any) -> None:
        """N, measurement, photons and pattern count come from the two files, hashed."""
        bad = np.zeros((64, 64), bool)
        bad[0, 0] = True
        sim = simulated_files(tmp_path, tiny_scan, bad=bad)
        with h5py.File(sim.diffraction, "r+") as h5:
            h5["patterns"][:, 0, 0] = 60000  # a hot pixel, masked: not photons
        lock = compile_spec(str(write_spec(tmp_path, sim)))
        c = lock.resolved.canonical
        assert (c.model.N, c.data.measurement, c.data.n_groups) == (64, "counts", len(tiny_scan))
        good_counts = np.where(bad, 0, sim.counts).sum(axis=(1, 2)).mean()
        assert c.training.nphotons == pytest.approx(good_counts)
        assert (
            lock.provenance["data.measurement"].detail == "ptychodus patterns are detector counts"
        )
        roles = {item.role: item for item in lock.inputs.data}
        assert set(roles) == {"product", "diffraction"}
        assert roles["product"].arrays["object"].shape == (1, 96, 96)
        assert roles["diffraction"].sha256.startswith("sha256:")

    def test_multimode_probe_warns(self, tmp_path: Path, tiny_scan: Any) -> None:
        """Compiling on a product with several probe modes warns at the product_file key."""
        sim = simulated_files(tmp_path, tiny_scan)
        with h5py.File(sim.product, "r+") as h5:
            probe = h5["probe"][...]
            del h5["probe"]
            h5["probe"] = np.concatenate([probe, 0 * probe], axis=1)
            h5["probe"].attrs.update(pixel_width_m=PIXEL_M, pixel_height_m=PIXEL_M)
        lock = compile_spec(str(write_spec(tmp_path, sim)))
        [warning] = [w for w in lock.warnings if w.path == "data.ptychodus.product_file"]
        assert "the probe has 2 modes" in warning.message and "(100% of" in warning.message

    def test_test_fraction_holds_patterns_out(self, tmp_path: Path, tiny_scan: Any) -> None:
        """With test_fraction, training draws only on the patterns kept for it."""
        sim = simulated_files(tmp_path, tiny_scan)
        lock = compile_spec(str(write_spec(tmp_path, sim, data="test_fraction = 0.2\n")))
        assert lock.resolved.canonical.data.n_groups == 20

    def test_amplitude_contradicts(self, tmp_path: Path, tiny_scan: Any) -> None:
        """Declaring ptychodus patterns amplitudes is a data error (exit 4)."""
        sim = simulated_files(tmp_path, tiny_scan)
        spec = write_spec(tmp_path, sim, data='measurement = "amplitude"\n')
        with pytest.raises(DataError, match=r"the file holds counts \(ptychodus patterns"):
            compile_spec(str(spec))

    def test_npz_files_have_no_place(self, tmp_path: Path, tiny_scan: Any) -> None:
        """A training NPZ beside a ptychodus source is an error naming both settings."""
        sim = simulated_files(tmp_path, tiny_scan)
        spec = write_spec(tmp_path, sim, data='train_file = "x.npz"\n')
        with pytest.raises(
            SpecError, match=r'data.train_file: has no effect.*data.source = "ptychodus"'
        ):
            compile_spec(str(spec))

    def test_npz_diffraction(self, tmp_path: Path, tiny_scan: Any) -> None:
        """An NPZ diffraction file compiles like the HDF5 one."""
        sim = simulated_files(tmp_path, tiny_scan, suffix=".npz")
        lock = compile_spec(str(write_spec(tmp_path, sim)))
        roles = {item.role: item for item in lock.inputs.data}
        assert roles["diffraction"].arrays["patterns"].shape == (25, 64, 64)
