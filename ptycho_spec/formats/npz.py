"""The PtychoPINN NPZ data contract (PtychoPINN ``specs/data_contracts.md``), written once.

Keys: ``diff3d`` (or ``diffraction``) ``(M, N, N)``, or the legacy ``(N, N, M)`` that readers
transpose; ``xcoords``, ``ycoords`` ``(M,)`` object pixels; ``probeGuess`` ``(N, N)`` (also
``(N, N, 1)``, ``(1, N, N)``); optional ``objectGuess`` ``(H, W)``, ``scan_index`` ``(M,)``,
and this project's optional ``valid_mask`` ``(N, N)`` bool and ``nphotons`` scalar.

The shape rules take shapes, so the compiler applies them to ``.npy`` headers
(``ptycho_spec.facts``) and the runner to the arrays it loads (``runner.data.npz``); every
violation raises ``DataError`` naming the file and the key. numpy is imported on first use:
``validate`` imports this module but reads no data.
"""

from __future__ import annotations

import math
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, Final

from ptycho_spec.errors import DataError
from ptycho_spec.lock import ArrayInfo

DIFFRACTION_KEYS: Final = ("diff3d", "diffraction")
PROBE: Final = "probeGuess"
COORDINATES: Final = ("xcoords", "ycoords")
# The dtype kinds (numpy ``dtype.kind``) each array may have: strings, dates or records would
# fail the value checks that follow with numpy's TypeError instead of a diagnostic.
KINDS: Final = MappingProxyType(
    {
        "diff3d": "iuf",
        "diffraction": "iuf",
        "xcoords": "iuf",
        "ycoords": "iuf",
        "probeGuess": "iufc",
        "objectGuess": "iufc",
        "scan_index": "iu",
        "valid_mask": "b",
    }
)
# What reading a damaged or foreign zip (an NPZ, a bundle) raises besides BadZipFile: cut or
# corrupted streams, compression methods and encryption that zipfile cannot read.
ZIP_ERRORS: Final = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    zlib.error,
    NotImplementedError,
    RuntimeError,
)


def _numpy() -> Any:
    import numpy

    return numpy


def member_key(name: str) -> str:
    """The array key of an NPZ member: its name without ``.npy``."""
    return name[:-4] if name.endswith(".npy") else name


def npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> ArrayInfo:
    """Shape and dtype of one ``.npy`` member, read from its header; ``ValueError`` for object
    arrays and for headers declaring more data than the member holds."""
    np = _numpy()
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        reader = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _fortran, dtype = reader(member)
    key = member_key(info.filename)
    if dtype.hasobject:
        msg = f"{key}: object arrays are not allowed (they need pickle)"
        raise ValueError(msg)
    # numpy allocates what the header declares before reading: a small hostile file could
    # otherwise ask for terabytes.
    declared = math.prod(shape) * dtype.itemsize
    if declared > info.file_size:
        msg = f"{key}: its header declares {declared} bytes but the member holds {info.file_size}"
        raise ValueError(msg)
    return ArrayInfo(shape=tuple(int(n) for n in shape), dtype=str(dtype))


def npz_arrays(path: str) -> dict[str, ArrayInfo]:
    """Key → shape and dtype of every array, read from the ``.npy`` headers only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {member_key(i.filename): npy_header(archive, i) for i in archive.infolist()}
    except FileNotFoundError:
        msg = "no such file"
        raise DataError(msg, path=path) from None
    # TokenError: numpy tokenizes the header of a version 1/2 ``.npy`` member.
    except (*ZIP_ERRORS, ValueError, tokenize.TokenError) as exc:
        msg = f"not a readable NPZ archive ({exc})"
        raise DataError(msg, path=path) from None


def check_kind(dtype: Any, *, path: str, key: str) -> None:
    """``DataError`` unless ``dtype`` (a numpy dtype or its name) is of a kind ``key`` allows."""
    kinds = KINDS[key]
    try:
        kind = _numpy().dtype(dtype).kind
    except TypeError:
        kind = "V"  # a structured dtype does not round-trip through its name
    if kind not in kinds:
        msg = f"has dtype {dtype}, expected numbers of kinds {kinds!r}"
        raise DataError(msg, path=path, key=key)


def diffraction_key(keys: Sequence[str], *, path: str) -> str:
    """The key the patterns are stored under: ``diff3d``, else ``diffraction``."""
    present = [k for k in DIFFRACTION_KEYS if k in keys]
    if not present:
        msg = f"no diffraction array: none of {', '.join(DIFFRACTION_KEYS)} present"
        raise DataError(msg, path=path, key=DIFFRACTION_KEYS[0])
    return present[0]


def probe_side(shape: Sequence[int], *, path: str) -> int:
    """N of a ``probeGuess`` of shape ``(N, N)``, ``(N, N, 1)`` or ``(1, N, N)``."""
    square = tuple(shape)
    if len(square) == 3 and 1 in (square[0], square[2]):
        square = square[1:] if square[0] == 1 else square[:2]
    if len(square) != 2 or square[0] != square[1] or square[0] < 1:
        msg = (
            f"probeGuess must be square (N, N), (N, N, 1) or (1, N, N); "
            f"{tuple(shape)} is not square"
        )
        raise DataError(msg, path=path, key=PROBE)
    return square[0]


def pattern_layout(shape: Sequence[int], side: int, *, path: str, key: str) -> tuple[int, bool]:
    """``(M, legacy)`` of a diffraction stack of ``shape``: ``(M, N, N)``, or the legacy
    ``(N, N, M)`` (``legacy``: readers move its last axis first), N the probe side."""
    shape = tuple(shape)
    if len(shape) != 3 or min(shape) < 1:
        msg = f"must be 3-D (M, N, N), got shape {shape}"
        raise DataError(msg, path=path, key=key)
    standard, legacy = shape[1:] == (side, side), shape[:2] == (side, side)
    if standard and legacy:
        msg = f"layout {shape} is ambiguous: M = N = {side} fits (M, N, N) and the legacy (N, N, M)"
        raise DataError(msg, path=path, key=key)
    if standard or legacy:
        return (shape[0] if standard else shape[2]), legacy
    if shape[1] == shape[2]:
        msg = f"patterns are {shape[1]}×{shape[2]} but probeGuess is {side}×{side}"
        raise DataError(msg, path=path, key=PROBE)
    msg = f"has shape {shape}; expected (M, N, N) or the legacy (N, N, M), N = {side}"
    raise DataError(msg, path=path, key=key)


def check_coordinates(shape: Sequence[int], n_patterns: int, *, path: str, key: str) -> None:
    """``xcoords`` and ``ycoords`` hold one position per pattern."""
    if tuple(shape) != (n_patterns,):
        msg = f"must have shape ({n_patterns},), one entry per pattern, got {tuple(shape)} entries"
        raise DataError(msg, path=path, key=key)


def check_measured(data: Any, *, path: str, key: str) -> None:
    """Measured patterns are finite and non-negative."""
    check_finite(data, path=path, key=key)
    if (data < 0).any():
        msg = f"holds negative values: {int((data < 0).sum())} of them"
        raise DataError(msg, path=path, key=key)


def check_finite(values: Any, *, path: str, key: str) -> None:
    """``DataError`` naming file and key when ``values`` hold NaN or inf."""
    np = _numpy()
    finite = np.isfinite(values)
    if not finite.all():
        msg = f"holds non-finite values (NaN or inf): {int((~finite).sum())} of them"
        raise DataError(msg, path=path, key=key)
