"""ptychodus product and diffraction files, read with h5py and numpy alone (no ptychodus import).

The compiler reads them for its facts and the runner for its scans, through these functions
only. Layouts are those of ptychodus 1.7.0:

* product HDF5 (``api/io.py`` ``save_product``): root attributes (``photon_energy_eV``,
  ``detector_object_distance_m``, ``far_field``, ...), ``probe`` (complex, 2-D to 4-D, pixel size
  in its ``pixel_width_m``/``pixel_height_m`` attributes), ``probe_position_indexes``,
  ``probe_position_x_m``, ``probe_position_y_m``, ``object`` (complex ``(H, W)`` or
  ``(L, H, W)``, attributes ``pixel_width_m``, ``pixel_height_m``, ``center_x_m``,
  ``center_y_m``), ``object_layer_spacing_m``, ``loss_epochs``, ``loss_values``;
* diffraction HDF5 (``api/io.py`` ``save_diffraction_data``): ``patterns`` ``(M, H, W)`` detector
  counts, ``indexes`` ``(M,)``, ``bad_pixels`` ``(H, W)`` bool; or an NPZ with the same keys
  (``plugins/npz_diffraction_file.py``). ``indexes`` defaults to 0 … M−1 and ``bad_pixels`` to
  none, as ptychodus's NPZ reader does.

Geometry (``api/object.py`` ``ObjectGeometry.map_probe_positions_to_object_x_px``): a probe
position maps to x_px = (x_m − center_x_m)/pixel_width_m + (W − 1)/2 in the object array's pixel
indices, and there sits probe pixel (N − 1)/2 (``api/probe.py`` ``resolve_patch_bounds``). Our
scan positions name the object pixel under patch pixel N/2 (``runner/physics/shift.py``): half a
pixel further, so ``object_pixels`` adds ½ and the object pixel grid is the product's object
array itself. Every violation raises ``DataError`` naming the file and the key.
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import Any, Final

import h5py
import numpy as np
from attrs import frozen

from ptycho_spec.data_checks import check_patterns, check_probe
from ptycho_spec.errors import DataError
from ptycho_spec.formats.npz import ZIP_ERRORS, check_finite
from ptycho_spec.lock import ArrayInfo

# ptychodus ``ProductFileKeys`` and ``DiffractionFileKeys`` (api/io.py).
PROBE: Final = "probe"
POSITION_INDEXES: Final = "probe_position_indexes"
POSITION_X: Final = "probe_position_x_m"
POSITION_Y: Final = "probe_position_y_m"
OBJECT: Final = "object"
LOSS_EPOCHS: Final = "loss_epochs"
LOSS_VALUES: Final = "loss_values"
PIXEL_WIDTH: Final = "pixel_width_m"
PIXEL_HEIGHT: Final = "pixel_height_m"
CENTER_X: Final = "center_x_m"
CENTER_Y: Final = "center_y_m"
FAR_FIELD: Final = "far_field"
PATTERNS: Final = "patterns"
INDEXES: Final = "indexes"
BAD_PIXELS: Final = "bad_pixels"
# Our scan position (patch pixel N/2) lies half a pixel beyond ptychodus's ((N − 1)/2).
PATCH_CENTRE_SHIFT_PX: Final = 0.5
_PIXEL_RTOL: Final = 1e-6


@frozen(kw_only=True)
class ProductFile:
    """What the runner needs of a ptychodus product.

    ``probe`` ``(N, N)`` complex64: the first incoherent mode of the first OPR mode (what
    ptychodus's own PtychoPINN reconstructors use). ``position_index``, ``x_m``, ``y_m``
    ``(P,)``: the scan positions in metres with their scan indexes. ``object_shape`` (H, W),
    ``pixel_m`` (width, height) and ``center_m`` (x, y) fix the object frame; ``object``
    ``(H, W)`` complex64 is the product's object (read only on request: an initial guess or an
    earlier reconstruction, never ground truth).
    """

    path: str
    probe: np.ndarray
    position_index: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    object_shape: tuple[int, int]
    pixel_m: tuple[float, float]
    center_m: tuple[float, float]
    object: np.ndarray | None = None
    probe_note: str | None = None  # what using only ``probe`` leaves out (see ``mode_note``)

    @property
    def N(self) -> int:
        return int(self.probe.shape[-1])


@frozen(kw_only=True)
class DiffractionFile:
    """Detector counts ``patterns`` ``(M, H, W)`` as stored, scan ``indexes`` ``(M,)`` int64,
    ``bad_pixels`` ``(H, W)`` bool (True = excluded)."""

    path: str
    patterns: np.ndarray
    indexes: np.ndarray
    bad_pixels: np.ndarray


@frozen(kw_only=True)
class Pairing:
    """Patterns matched to positions: ``rows`` of the diffraction file and the position
    (metres) of each."""

    rows: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray


# --- products ---------------------------------------------------------------------------------


def read_product(path: str, *, with_object: bool = False) -> ProductFile:
    """Read and check a product file; ``with_object`` also reads its object (layer 0)."""
    with _open_h5(path) as h5:
        check_far_field(_flag(path, h5, FAR_FIELD, default=True), path=path)
        probe_ds, object_ds = _dataset(path, h5, PROBE), _dataset(path, h5, OBJECT)
        probes = _complex(path, PROBE, _values(path, probe_ds))
        probe = probe_mode0(probes, path=path)
        check_probe(probe, path=path, key=PROBE)
        object_shape = object_frame(object_ds.shape, object_ds.dtype, path=path)
        pixel_m = _pixel_size(path, OBJECT, object_ds)
        check_pixels(_pixel_size(path, PROBE, probe_ds), pixel_m, path=path)
        index, x_m, y_m = _positions(path, h5)
        obj = _complex(path, OBJECT, _values(path, object_ds)) if with_object else None
        return ProductFile(
            path=path,
            probe=probe,
            position_index=index,
            x_m=x_m,
            y_m=y_m,
            object_shape=object_shape,
            pixel_m=pixel_m,
            center_m=(
                _attr(path, OBJECT, object_ds, CENTER_X),
                _attr(path, OBJECT, object_ds, CENTER_Y),
            ),
            object=None if obj is None else obj.reshape(object_shape).astype(np.complex64),
            probe_note=mode_note(probes),
        )


def _open_h5(path: str) -> h5py.File:
    if not os.path.isfile(path):
        msg = "no such file"
        raise DataError(msg, path=path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        msg = f"not a readable HDF5 file ({exc})"
        raise DataError(msg, path=path) from None


def _flag(path: str, h5: h5py.File, name: str, *, default: bool) -> bool:
    """A boolean root attribute: one bool or integer (h5py may store a bool as 0/1)."""
    raw = np.asarray(h5.attrs.get(name, default))
    if raw.size != 1 or raw.dtype.kind not in "biu":
        msg = f"must be one boolean, got {raw.dtype} of shape {raw.shape}"
        raise DataError(msg, path=path, key=name)
    return bool(raw.reshape(()))


def check_far_field(far_field: bool, *, path: str) -> None:
    """PtychoPINN models far-field diffraction only."""
    if not far_field:
        msg = "is false: near-field products are not supported (PtychoPINN models far-field diffraction)"
        raise DataError(msg, path=path, key=FAR_FIELD)


def _dataset(path: str, h5: h5py.File, key: str) -> h5py.Dataset:
    item = h5.get(key)
    if not isinstance(item, h5py.Dataset):
        msg = "missing dataset" if item is None else "is not a dataset"
        raise DataError(msg, path=path, key=key)
    return item


def _values(path: str, dataset: h5py.Dataset) -> np.ndarray:
    try:
        return dataset[()]
    except OSError as exc:  # a compression filter this h5py lacks, or a truncated file
        msg = f"cannot read the dataset ({exc}); compressed detector data may need hdf5plugin"
        raise DataError(msg, path=path, key=dataset.name.lstrip("/")) from None


def _complex(path: str, key: str, values: np.ndarray) -> np.ndarray:
    if values.dtype.kind != "c":
        msg = f"must be complex, got {values.dtype}"
        raise DataError(msg, path=path, key=key)
    check_finite(values, path=path, key=key)
    return values


def probe_mode0(probe: np.ndarray, *, path: str) -> np.ndarray:
    """The first incoherent mode of the first OPR mode of a ptychodus probe array, ``(N, N)``
    complex64; ptychodus canonicalizes 2-D, 3-D ``(I, H, W)`` and 4-D ``(C, I, H, W)`` arrays so
    (``api/probe.py`` ``ProbeSequence``)."""
    if probe.ndim not in (2, 3, 4):
        msg = f"must be 2-D to 4-D, got shape {probe.shape}"
        raise DataError(msg, path=path, key=PROBE)
    mode = probe.reshape(-1, *probe.shape[-2:])[0]
    if mode.shape[0] != mode.shape[1]:
        msg = f"must be square, got {mode.shape[0]}×{mode.shape[1]}"
        raise DataError(msg, path=path, key=PROBE)
    return mode.astype(np.complex64)


def mode_note(probe: np.ndarray) -> str | None:
    """None for a single-mode probe array; else a sentence saying that only the first mode is
    used and what share of the probe's power it holds (PtychoPINN models one coherent probe)."""
    modes = probe.reshape(-1, *probe.shape[-2:])
    if len(modes) == 1:
        return None
    power = np.square(np.abs(modes.astype(np.complex128))).sum(axis=(1, 2))
    share = float(power[0] / power.sum()) if power.sum() > 0 else 0.0
    return (
        f"the probe has {len(modes)} modes; PtychoPINN models one coherent probe, so only the "
        f"first is used ({share:.0%} of the probe's power)"
    )


def object_frame(shape: tuple[int, ...], dtype: np.dtype, *, path: str) -> tuple[int, int]:
    """(H, W) of a product's object array: complex, one layer (PtychoPINN's object is thin)."""
    if dtype.kind != "c":
        msg = f"must be complex, got {dtype}"
        raise DataError(msg, path=path, key=OBJECT)
    if len(shape) == 3 and shape[0] != 1:
        msg = f"has {shape[0]} layers: multislice objects are not supported (PtychoPINN models one thin object)"
        raise DataError(msg, path=path, key=OBJECT)
    if len(shape) not in (2, 3) or min(shape[-2:]) < 1:
        msg = f"must be a non-empty (H, W) or (1, H, W) array, got shape {shape}"
        raise DataError(msg, path=path, key=OBJECT)
    return int(shape[-2]), int(shape[-1])


def _attr(path: str, key: str, dataset: h5py.Dataset, name: str) -> float:
    if name not in dataset.attrs:
        msg = f"missing attribute {name}"
        raise DataError(msg, path=path, key=key)
    raw = np.asarray(dataset.attrs[name])
    if raw.size != 1 or raw.dtype.kind not in "iuf":
        msg = f"attribute {name} must be one number, got {raw.dtype} of shape {raw.shape}"
        raise DataError(msg, path=path, key=key)
    value = float(raw.reshape(()))
    if not math.isfinite(value):
        msg = f"attribute {name} is not finite ({value})"
        raise DataError(msg, path=path, key=key)
    return value


def _pixel_size(path: str, key: str, dataset: h5py.Dataset) -> tuple[float, float]:
    size = (_attr(path, key, dataset, PIXEL_WIDTH), _attr(path, key, dataset, PIXEL_HEIGHT))
    if min(size) <= 0:
        msg = f"pixel size must be positive, got {size} m"
        raise DataError(msg, path=path, key=key)
    return size


def check_pixels(probe_m: tuple[float, float], object_m: tuple[float, float], *, path: str) -> None:
    """Probe and object share one pixel grid (width, height in metres): the model multiplies
    them pixel by pixel."""
    if not all(
        math.isclose(p, q, rel_tol=_PIXEL_RTOL) for p, q in zip(probe_m, object_m, strict=True)
    ):
        msg = f"probe pixels {probe_m} m differ from object pixels {object_m} m"
        raise DataError(msg, path=path, key=PROBE)


def _positions(path: str, h5: h5py.File) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = _values(path, _dataset(path, h5, POSITION_INDEXES))
    coords = [_values(path, _dataset(path, h5, key)) for key in (POSITION_X, POSITION_Y)]
    if index.ndim != 1 or index.dtype.kind not in "iu" or len(index) == 0:
        msg = f"must be a non-empty 1-D integer array, got {index.dtype} {index.shape}"
        raise DataError(msg, path=path, key=POSITION_INDEXES)
    for key, values in zip((POSITION_X, POSITION_Y), coords, strict=True):
        if values.shape != index.shape or values.dtype.kind not in "iuf":
            msg = f"must be real with shape {index.shape}, got {values.dtype} {values.shape}"
            raise DataError(msg, path=path, key=key)
        check_finite(values, path=path, key=key)
    return index.astype(np.int64), coords[0].astype(np.float64), coords[1].astype(np.float64)


def object_pixels(
    product: ProductFile, x_m: np.ndarray, y_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in metres → our object pixels (x = column): ptychodus's mapping plus ½."""
    (height, width), (pixel_width_m, pixel_height_m) = product.object_shape, product.pixel_m
    center_x_m, center_y_m = product.center_m
    x_px = (x_m - center_x_m) / pixel_width_m + (width - 1) / 2 + PATCH_CENTRE_SHIFT_PX
    y_px = (y_m - center_y_m) / pixel_height_m + (height - 1) / 2 + PATCH_CENTRE_SHIFT_PX
    return x_px, y_px


# --- diffraction ------------------------------------------------------------------------------


def read_diffraction(path: str) -> DiffractionFile:
    """Read and check a diffraction file: HDF5, or NPZ by its zip signature."""
    arrays = _npz_arrays(path) if is_npz(path) else _h5_arrays(path)
    patterns = arrays.get(PATTERNS)
    if patterns is None:
        msg = "missing required key"
        raise DataError(msg, path=path, key=PATTERNS)
    if patterns.ndim != 3 or patterns.dtype.kind not in "iuf" or patterns.shape[0] == 0:
        msg = f"must be a non-empty real (M, H, W) array, got {patterns.dtype} {patterns.shape}"
        raise DataError(msg, path=path, key=PATTERNS)
    return DiffractionFile(
        path=path,
        patterns=patterns,
        indexes=_indexes(path, arrays.get(INDEXES), len(patterns)),
        bad_pixels=_bad_pixels(path, arrays.get(BAD_PIXELS), patterns.shape[1:]),
    )


def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files if key in (PATTERNS, INDEXES, BAD_PIXELS)}
    except (*ZIP_ERRORS, ValueError) as exc:
        msg = f"not a readable NPZ archive ({exc})"
        raise DataError(msg, path=path) from None


def _h5_arrays(path: str) -> dict[str, np.ndarray]:
    with _open_h5(path) as h5:
        return {
            key: _values(path, _dataset(path, h5, key))
            for key in (PATTERNS, INDEXES, BAD_PIXELS)
            if key in h5
        }


def _indexes(path: str, indexes: np.ndarray | None, m: int) -> np.ndarray:
    if indexes is None:
        return np.arange(m, dtype=np.int64)
    if indexes.shape != (m,) or indexes.dtype.kind not in "iu":
        msg = f"must be integers of shape ({m},), got {indexes.dtype} {indexes.shape}"
        raise DataError(msg, path=path, key=INDEXES)
    return indexes.astype(np.int64)


def _bad_pixels(path: str, bad: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if bad is None:
        return np.zeros(shape, dtype=bool)
    if bad.shape != shape or bad.dtype.kind not in "biu" or not np.isin(bad, (0, 1)).all():
        msg = f"must be a boolean {shape} mask, got {bad.dtype} {bad.shape}"
        raise DataError(msg, path=path, key=BAD_PIXELS)
    return bad.astype(bool)


def pair(product: ProductFile, diffraction: DiffractionFile) -> Pairing:
    """Patterns paired to positions by scan index, as ptychodus does
    (``api/reconstruct.py`` ``prepare_reconstruct_input``): negative pattern indexes are
    unassembled slots and dropped; duplicate position indexes are averaged; patterns inside
    the positions' index range get positions interpolated between neighbours; the rest are
    dropped. Also checks that patterns, probe and object fit together."""
    check_pattern_size(diffraction.patterns.shape, product.N, path=diffraction.path)
    unique, inverse = np.unique(product.position_index, return_inverse=True)
    counts = np.bincount(inverse)
    mean_x = np.bincount(inverse, weights=product.x_m) / counts
    mean_y = np.bincount(inverse, weights=product.y_m) / counts
    index = diffraction.indexes
    rows = np.flatnonzero((index >= max(unique[0], 0)) & (index <= unique[-1]))
    if len(rows) == 0:
        msg = (
            f"no pattern index in [{unique[0]}, {unique[-1]}], the probe position indexes "
            f"of {product.path}"
        )
        raise DataError(msg, path=diffraction.path, key=INDEXES)
    kept = index[rows]
    return Pairing(
        rows=rows,
        x_m=np.interp(kept, unique, mean_x),
        y_m=np.interp(kept, unique, mean_y),
    )


def check_pattern_size(shape: tuple[int, ...], n: int, *, path: str) -> None:
    """Far-field patterns ``(M, N, N)`` have the probe's N × N pixels."""
    height, width = shape[1:]
    if (height, width) != (n, n):
        msg = f"patterns are {height}×{width} but the probe is {n}×{n}"
        raise DataError(msg, path=path, key=PATTERNS)


def _good_counts(patterns: np.ndarray, bad_pixels: np.ndarray, *, path: str) -> np.ndarray:
    """Detector counts ``(M, N, N)`` as float64 with bad pixels set to 0.

    Bad pixels may hold anything (negative flags, NaN): they are never read again. Negative or
    non-finite counts on good pixels raise ``DataError``.
    """
    counts = np.where(bad_pixels, 0.0, np.asarray(patterns, dtype=np.float64))
    wrong = ~np.isfinite(counts) | (counts < 0)
    if wrong.any():
        msg = f"{int(wrong.sum())} good pixels hold negative or non-finite counts"
        raise DataError(msg, path=path, key=PATTERNS)
    return counts


def counts_to_amplitude(patterns: np.ndarray, bad_pixels: np.ndarray, *, path: str) -> np.ndarray:
    """The measurement convention of the lock: amplitude sqrt(counts), float32, computed in
    float64 (bad pixels 0)."""
    return np.sqrt(_good_counts(patterns, bad_pixels, path=path)).astype(np.float32)


def mean_counts(patterns: np.ndarray, bad_pixels: np.ndarray, *, path: str) -> float:
    """Photons per pattern: the mean over patterns of the counts summed over good pixels;
    ``DataError`` when every pattern is zero there."""
    counts = _good_counts(patterns, bad_pixels, path=path)
    check_patterns(counts, path=path, key=PATTERNS, over=" on its good pixels")
    return float(counts.sum(axis=(1, 2)).mean())


# --- facts ------------------------------------------------------------------------------------


def is_npz(path: str) -> bool:
    """An NPZ archive (a zip file), else taken for HDF5."""
    return zipfile.is_zipfile(path)


def h5_array_infos(path: str) -> dict[str, ArrayInfo]:
    """Name → shape and dtype of every dataset of an HDF5 file (nested names with ``/``)."""
    infos: dict[str, ArrayInfo] = {}

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            infos[name] = _info(item)

    with _open_h5(path) as h5:
        h5.visititems(visit)
    return dict(sorted(infos.items()))


def _info(dataset: h5py.Dataset) -> ArrayInfo:
    return ArrayInfo(shape=tuple(int(n) for n in dataset.shape), dtype=str(dataset.dtype))
