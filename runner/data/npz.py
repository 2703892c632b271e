"""Reader and writer of the PtychoPINN NPZ data contract as ``Scan`` arrays.

The contract's keys, layouts and shape and value rules are ``ptycho_spec.formats.npz``, the
ones the compiler applies to the same file's headers. Files open with ``allow_pickle=False``;
every violation raises ``DataError`` naming the file and the key, as does a probe that
illuminates nothing or positions no stitching canvas could hold (``ptycho_spec.data_checks``).
"""

from __future__ import annotations

import os
import tokenize
from pathlib import Path
from typing import NoReturn

import numpy as np

from ptycho_spec import atomic
from ptycho_spec.data_checks import check_positions, check_probe
from ptycho_spec.errors import DataError
from ptycho_spec.formats import npz as contract
from ptycho_spec.formats.npz import DIFFRACTION_KEYS, ZIP_ERRORS, npy_header
from ptycho_spec.schema import Measurement
from runner.data.scan import Scan


class _Archive:
    """The arrays of one NPZ file, each fetched once and checked, errors naming the file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                self.arrays = {k: self._fetch(npz, k) for k in npz.files}
        except (*ZIP_ERRORS, ValueError, tokenize.TokenError) as exc:
            # ValueError: numpy's refusal of a pickled (non-NPZ) file without allow_pickle
            msg = f"cannot read as NPZ: {exc}"
            raise DataError(msg, path=self.path) from exc

    def _fetch(self, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
        member = f"{key}.npy" if f"{key}.npy" in npz.zip.namelist() else key
        try:
            # The header first: numpy allocates whatever size it declares before reading, and
            # object arrays need pickle, which stays off.
            npy_header(npz.zip, npz.zip.getinfo(member))
            return npz[key]
        except ValueError as exc:
            msg = f"cannot load: {exc}"
            raise DataError(msg, path=self.path, key=key) from exc

    def reject(self, message: str, key: str | None = None) -> NoReturn:
        """Raise the ``DataError`` for ``message`` about ``key`` of this file."""
        raise DataError(message, path=self.path, key=key)

    def get(self, key: str, *, ndim: tuple[int, ...]) -> np.ndarray | None:
        """The array under ``key`` (None if absent), checked for dtype kind (``KINDS``), rank
        and finiteness."""
        if key not in self.arrays:
            return None
        arr = self.arrays[key]
        contract.check_kind(arr.dtype, path=self.path, key=key)
        if arr.ndim not in ndim:
            self.reject(
                f"has shape {arr.shape}, expected {' or '.join(f'{d}-D' for d in ndim)}", key
            )
        if arr.dtype.kind in "fc":
            contract.check_finite(arr, path=self.path, key=key)
        return arr

    def require(self, key: str, *, ndim: tuple[int, ...]) -> np.ndarray:
        arr = self.get(key, ndim=ndim)
        if arr is None:
            self.reject(f"missing required key (present: {', '.join(sorted(self.arrays))})", key)
        return arr


def _probe(arc: _Archive) -> np.ndarray:
    """probeGuess as ``(N, N)`` complex64 from ``(N, N)``, ``(N, N, 1)`` or ``(1, N, N)``."""
    probe = arc.require(contract.PROBE, ndim=(2, 3))
    n = contract.probe_side(probe.shape, path=arc.path)
    probe = probe.reshape(n, n)
    check_probe(probe, path=arc.path)
    return probe.astype(np.complex64)


def _diffraction(arc: _Archive, m: int, n: int) -> np.ndarray:
    """The diffraction stack as ``(M, N, N)``, transposing the legacy ``(N, N, M)`` layout."""
    key = contract.diffraction_key(list(arc.arrays), path=arc.path)
    data = arc.require(key, ndim=(3,))
    other = next((k for k in DIFFRACTION_KEYS if k != key and k in arc.arrays), None)
    if other is not None and not np.array_equal(data, arc.arrays[other]):
        arc.reject(f"{key} and {other} both present and different; keep one", key)
    n_patterns, legacy = contract.pattern_layout(data.shape, n, path=arc.path, key=key)
    for name in contract.COORDINATES:
        contract.check_coordinates((m,), n_patterns, path=arc.path, key=name)
    if legacy:
        data = np.moveaxis(data, -1, 0)
    contract.check_measured(data, path=arc.path, key=key)
    return data


def _coords(arc: _Archive) -> tuple[np.ndarray, np.ndarray]:
    x = arc.require("xcoords", ndim=(1,)).astype(np.float64)
    y = arc.require("ycoords", ndim=(1,)).astype(np.float64)
    if x.shape != y.shape:
        arc.reject(f"has {len(y)} entries, xcoords has {len(x)}", "ycoords")
    return x, y


def _to_amplitude(data: np.ndarray, measurement: Measurement) -> np.ndarray:
    """Stored values → amplitude float32; counts are square-rooted in float64 and
    rounded to float32 once."""
    if measurement == "counts":
        return np.sqrt(data.astype(np.float64)).astype(np.float32)
    return data.astype(np.float32)


def _optional_arrays(arc: _Archive, m: int, n: int) -> dict[str, np.ndarray | None]:
    obj = arc.get("objectGuess", ndim=(2,))
    index = arc.get("scan_index", ndim=(1,))
    if index is not None and index.shape != (m,):
        arc.reject(f"has shape {index.shape}, expected ({m},)", "scan_index")
    mask = arc.get("valid_mask", ndim=(2,))
    if mask is not None and mask.shape != (n, n):
        arc.reject(f"has shape {mask.shape}, expected ({n}, {n})", "valid_mask")
    return {
        "object": None if obj is None else obj.astype(np.complex64),
        "scan_index": np.zeros(m, np.int64) if index is None else index.astype(np.int64),
        "valid_mask": mask,
    }


def read_npz(path: str | os.PathLike[str], *, measurement: Measurement) -> Scan:
    """Read a scan in the PtychoPINN NPZ contract; ``measurement`` says what ``diff3d`` holds."""
    arc = _Archive(path)
    probe = _probe(arc)
    x, y = _coords(arc)
    check_positions(x, y, n=probe.shape[0], path=arc.path)
    data = _diffraction(arc, len(x), probe.shape[0])
    return Scan(
        amplitude=_to_amplitude(data, measurement),
        x_px=x,
        y_px=y,
        probe=probe,
        source=arc.path,
        **_optional_arrays(arc, len(x), probe.shape[0]),
    )


def read_probe(path: str | os.PathLike[str]) -> np.ndarray:
    """Only ``probeGuess`` of an NPZ (a probe file need not hold a scan): ``(N, N)`` complex64."""
    return _probe(_Archive(path))


def write_npz(
    scan: Scan,
    path: str | os.PathLike[str],
    *,
    measurement: Measurement = "amplitude",
    nphotons: float | None = None,
) -> None:
    """Write ``scan`` in the contract, atomically (a temporary file renamed into place).

    ``measurement="counts"`` stores X² (what ``read_npz(..., measurement="counts")`` turns back
    into X). ``nphotons`` (photons per pattern), when given, is stored as a scalar.
    """
    amp = scan.amplitude
    if measurement == "counts":
        amp = np.square(amp, dtype=np.float64).astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "diff3d": amp.astype(np.float32, copy=False),
        "xcoords": scan.x_px,
        "ycoords": scan.y_px,
        "probeGuess": scan.probe,
        "scan_index": scan.scan_index,
    }
    optional = {"objectGuess": scan.object, "valid_mask": scan.valid_mask}
    arrays.update({k: v for k, v in optional.items() if v is not None})
    if nphotons is not None:
        arrays["nphotons"] = np.float64(nphotons)
    _save_atomically(Path(path), arrays)


def _save_atomically(target: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic.atomic_open(target, "wb") as f:
        np.savez(f, **arrays)
