"""The compiler's I/O edge: facts about input files and the compiling host, read without torch.

* :func:`read_inputs` reads what the compiler needs from the data a spec names (array keys,
  shapes and dtypes, probe side, pattern count, measurement kind, photon statistics, hashes);
  one reader per ``data.source``.
* :func:`read_host` reads the host: accelerator and device count (from torch's ``version.py``
  text and the NVIDIA device nodes, never by importing torch), terminal, optional packages,
  library versions and the git state of this package's checkout.

Broken input files raise ``DataError`` (exit 4) naming the file and key.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import re
import subprocess
import sys
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs
from attrs import frozen

from ptycho_spec.errors import DataError, LockError
from ptycho_spec.lock import ArrayInfo, DataInput, Environment, Lock, loads_lock
from ptycho_spec.rules import OPTIONAL_LOGGERS

DIFFRACTION_KEYS: Final = ("diff3d", "diffraction")
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
BUNDLE_LOCK: Final = "lock.toml"
MAX_BUNDLE_LOCK_BYTES: Final = 4 * 1024 * 1024  # a lock is a few kB; refuse zip bombs
_CHUNK: Final = 1 << 20


@frozen(kw_only=True)
class ScanFacts:
    """What the compiler needs to know of one diffraction file.

    ``measurement`` is ``"counts"`` for integer dtypes or float data whose values are all
    non-negative whole numbers with a maximum above 1, else ``"amplitude"``; ptychodus
    patterns are always counts, and ``n_patterns`` counts those paired to a position.
    ``mean_counts`` (counts data only) is the mean over patterns of the summed counts (over good
    pixels), in photons.
    """

    n_patterns: int
    measurement: str
    mean_counts: float | None = None
    nphotons: float | None = None  # an ``nphotons`` array stored in the file
    has_object: bool = False  # holds ``objectGuess`` (ground truth) or a ptychodus object


@frozen(kw_only=True)
class DataFile:
    """One input file: its lock entry, probe side (px) if it holds a probe, scan facts if any,
    and ``notes``: (spec key, message) warnings about what the run will not use of it."""

    input: DataInput
    probe_side: int | None = None
    scan: ScanFacts | None = None
    notes: tuple[tuple[str, str], ...] = ()


@frozen(kw_only=True)
class InputFacts:
    """Everything read from the input files of one spec."""

    files: tuple[DataFile, ...] = ()
    bundle: Lock | None = None  # the lock inside inference.bundle

    def get(self, role: str) -> DataFile | None:
        """The file with this role (``train``, ``test``, ``probe``, ``product``,
        ``diffraction``, ``bundle``), if any."""
        return next((f for f in self.files if f.input.role == role), None)


@frozen(kw_only=True)
class InputPaths:
    """Absolute paths of the files a spec names, by role, and its ``data.source``."""

    source: str | None
    paths: Mapping[str, str]


def read_inputs(wanted: InputPaths) -> InputFacts:
    """Read every file of ``wanted`` with the reader of its data source."""
    reader = _READERS.get(wanted.source or "", _read_nothing)
    files = reader(wanted.paths)
    bundle_path = wanted.paths.get("bundle")
    if bundle_path is None:
        return InputFacts(files=files)
    bundle, entry = read_bundle(bundle_path)
    return InputFacts(files=(*files, entry), bundle=bundle)


def _read_nothing(_paths: Mapping[str, str]) -> tuple[DataFile, ...]:
    return ()


def _read_npz_source(paths: Mapping[str, str]) -> tuple[DataFile, ...]:
    return tuple(read_scan_npz(paths[role], role) for role in ("train", "test") if role in paths)


def _read_simulate_source(paths: Mapping[str, str]) -> tuple[DataFile, ...]:
    return (read_probe_npz(paths["probe"]),) if "probe" in paths else ()


def _read_ptychodus_source(paths: Mapping[str, str]) -> tuple[DataFile, ...]:
    """Facts of a ptychodus product and its diffraction file: the probe side, the patterns
    paired to positions, and the photons per pattern over good pixels."""
    from ptycho_spec.formats import ptychodus as pf  # h5py: only when ptychodus data are named

    product = pf.read_product(paths["product"])
    diffraction = pf.read_diffraction(paths["diffraction"])
    rows = pf.pair(product, diffraction).rows
    scan = ScanFacts(
        n_patterns=len(rows),
        measurement="counts",  # ptychodus patterns are detector counts (api/diffraction.py)
        mean_counts=pf.mean_counts(
            diffraction.patterns[rows], diffraction.bad_pixels, path=diffraction.path
        ),
        has_object=True,  # the product's object: labels for supervised training
    )
    arrays = npz_arrays if pf.is_npz(diffraction.path) else pf.h5_array_infos
    return (
        DataFile(
            input=_data_input(product.path, "product", pf.h5_array_infos(product.path)),
            probe_side=product.N,
            notes=(
                ()
                if product.probe_note is None
                else (("data.ptychodus.product_file", product.probe_note),)
            ),
        ),
        DataFile(
            input=_data_input(diffraction.path, "diffraction", arrays(diffraction.path)),
            scan=scan,
        ),
    )


# One reader per data.source: what the compiler reads of that source's files.
_READERS: Final[Mapping[str, Callable[[Mapping[str, str]], tuple[DataFile, ...]]]] = (
    MappingProxyType(
        {
            "npz": _read_npz_source,
            "simulate": _read_simulate_source,
            "ptychodus": _read_ptychodus_source,
        }
    )
)


# --- NPZ files --------------------------------------------------------------------------------


def read_scan_npz(path: str, role: str) -> DataFile:
    """Facts of a diffraction NPZ in the PtychoPINN data contract, its values checked
    (``data_checks``: an illuminating probe, measured patterns, positions a canvas holds)."""
    from ptycho_spec.data_checks import check_positions, check_probe  # numpy: on first use

    arrays = npz_arrays(path)
    dkey = next((k for k in DIFFRACTION_KEYS if k in arrays), None)
    if dkey is None:
        msg = "no diffraction array (diff3d or diffraction)"
        raise DataError(msg, path=path, key="diff3d")
    side = _probe_side(path, arrays)
    n_patterns = _check_diffraction_shape(path, dkey, arrays[dkey], side)
    for key in ("xcoords", "ycoords"):
        _check_coords(path, key, arrays, n_patterns)
    with _open_npz(path) as npz:
        scan = _scan_facts(path, npz, dkey, n_patterns, has_object="objectGuess" in arrays)
        check_probe(npz["probeGuess"], path=path)
        check_positions(npz["xcoords"], npz["ycoords"], n=side, path=path)
    return DataFile(input=_data_input(path, role, arrays), probe_side=side, scan=scan)


def read_probe_npz(path: str) -> DataFile:
    """Facts of an NPZ that provides a probe (``probeGuess``) for simulation."""
    from ptycho_spec.data_checks import check_probe  # numpy: on first use

    arrays = npz_arrays(path)
    side = _probe_side(path, arrays)
    with _open_npz(path) as npz:
        check_probe(npz["probeGuess"], path=path)
    return DataFile(input=_data_input(path, "probe", arrays), probe_side=side)


def _data_input(path: str, role: str, arrays: Mapping[str, ArrayInfo]) -> DataInput:
    sha, size = file_digest(path)
    return DataInput(
        role=role, path=path, sha256=sha, size=size, arrays=dict(sorted(arrays.items()))
    )


def npz_arrays(path: str) -> dict[str, ArrayInfo]:
    """Key → shape and dtype of every array, read from the ``.npy`` headers only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {_member_key(i.filename): npy_header(archive, i) for i in archive.infolist()}
    except FileNotFoundError:
        msg = "no such file"
        raise DataError(msg, path=path) from None
    # TokenError: numpy tokenizes the header of a version 1/2 ``.npy`` member.
    except (*ZIP_ERRORS, ValueError, tokenize.TokenError) as exc:
        msg = f"not a readable NPZ archive ({exc})"
        raise DataError(msg, path=path) from None


def _numpy() -> Any:
    """numpy, imported on first use: ``validate`` imports this module but reads no data."""
    import numpy

    return numpy


def _member_key(name: str) -> str:
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
    key = _member_key(info.filename)
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


def _open_npz(path: str) -> Any:
    np = _numpy()
    return np.load(path, allow_pickle=False)


def _probe_side(path: str, arrays: Mapping[str, ArrayInfo]) -> int:
    """Side of a square ``probeGuess``: ``(N, N)``, ``(N, N, 1)`` or ``(1, N, N)``."""
    info = arrays.get("probeGuess")
    if info is None:
        msg = "no probeGuess array"
        raise DataError(msg, path=path, key="probeGuess")
    _check_kind(path, "probeGuess", info, "iufc")
    shape = tuple(info.shape)
    if len(shape) == 3 and 1 in (shape[0], shape[2]):
        shape = shape[1:] if shape[0] == 1 else shape[:2]
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 1:
        msg = f"probeGuess must be square (N, N), got shape {info.shape}"
        raise DataError(msg, path=path, key="probeGuess")
    return shape[0]


def _check_diffraction_shape(path: str, key: str, info: ArrayInfo, side: int) -> int:
    """Diffraction must be ``(M, N, N)``, or the legacy ``(N, N, M)`` the reader transposes
    (``runner/data/npz.py``), with N the probe side; returns M."""
    _check_kind(path, key, info, "iuf")
    shape = tuple(info.shape)
    if len(shape) != 3 or min(shape) < 1:
        msg = f"must have shape (M, N, N), got {shape}"
        raise DataError(msg, path=path, key=key)
    standard, legacy = shape[1:] == (side, side), shape[:2] == (side, side)
    if standard and legacy:
        msg = f"layout {shape} is ambiguous: M = N = {side} fits (M, N, N) and the legacy (N, N, M)"
        raise DataError(msg, path=path, key=key)
    if standard or legacy:
        return shape[0] if standard else shape[2]
    if shape[1] == shape[2]:
        msg = f"patterns are {shape[1]}×{shape[2]} but probeGuess is {side}×{side}"
    else:
        msg = f"must have shape (M, N, N), got {shape}"
    raise DataError(msg, path=path, key=key)


def _check_coords(path: str, key: str, arrays: Mapping[str, ArrayInfo], n_patterns: int) -> None:
    info = arrays.get(key)
    if info is None:
        msg = "missing scan coordinates"
        raise DataError(msg, path=path, key=key)
    if info.shape != (n_patterns,):
        msg = f"must have shape ({n_patterns},), got {info.shape}"
        raise DataError(msg, path=path, key=key)
    _check_kind(path, key, info, "iuf")


def _check_kind(path: str, key: str, info: ArrayInfo, kinds: str) -> None:
    """Numbers of the kinds the contract allows: strings, dates or records fail the checks
    that follow (finiteness, signs) with numpy's TypeError instead of a diagnostic."""
    try:
        kind = _numpy().dtype(info.dtype).kind
    except TypeError:
        kind = "V"  # a structured dtype does not round-trip through its name
    if kind not in kinds:
        msg = f"has dtype {info.dtype}, expected numbers of kinds {kinds!r}"
        raise DataError(msg, path=path, key=key)


def check_finite(path: str, key: str, values: Any) -> None:
    """A ``DataError`` naming file and key when ``values`` hold NaN or inf."""
    np = _numpy()
    if not np.isfinite(values).all():
        msg = "holds non-finite values (NaN or inf)"
        raise DataError(msg, path=path, key=key)


def _scan_facts(path: str, npz: Any, dkey: str, n_patterns: int, *, has_object: bool) -> ScanFacts:
    from ptycho_spec.data_checks import check_patterns

    np = _numpy()
    data = npz[dkey]
    if data.shape[0] != n_patterns:  # the legacy (N, N, M) layout
        data = np.moveaxis(data, -1, 0)
    check_finite(path, dkey, data)
    if (data < 0).any():
        msg = "holds negative values"
        raise DataError(msg, path=path, key=dkey)
    over = " on the pixels valid_mask keeps" if "valid_mask" in npz.files else ""
    check_patterns(_good_pixels(npz, data), path=path, key=dkey, over=over)
    for key in ("xcoords", "ycoords"):
        check_finite(path, key, npz[key])
    counts = _is_counts(np, data)
    mean_counts = float(data.sum(axis=(1, 2), dtype=np.float64).mean()) if counts else None
    return ScanFacts(
        n_patterns=n_patterns,
        measurement="counts" if counts else "amplitude",
        mean_counts=mean_counts,
        nphotons=_stored_nphotons(path, npz),
        has_object=has_object,
    )


def _good_pixels(npz: Any, data: Any) -> Any:
    """The patterns ``(M, N, N)`` with the pixels a ``valid_mask`` marks bad set to 0."""
    if "valid_mask" not in npz.files:
        return data
    mask = npz["valid_mask"]
    if mask.dtype != bool or mask.shape != data.shape[1:]:
        return data  # the runner's reader names what is wrong with the mask
    return data * mask


def _is_counts(np: Any, data: Any) -> bool:
    """Integer dtype, or float values that are all whole numbers with a maximum above 1."""
    if np.issubdtype(data.dtype, np.integer):
        return True
    if not np.issubdtype(data.dtype, np.floating) or data.size == 0:
        return False
    return bool(np.all(data == np.floor(data)) and data.max() > 1)


def _stored_nphotons(path: str, npz: Any) -> float | None:
    if "nphotons" not in npz.files:
        return None
    values = npz["nphotons"]
    if values.size != 1 or values.dtype.kind not in "iuf":
        msg = f"must be a single number, got shape {values.shape}"
        raise DataError(msg, path=path, key="nphotons")
    value = float(values.reshape(()))
    if not value > 0 or value == float("inf"):
        msg = f"must be a positive finite number, got {value}"
        raise DataError(msg, path=path, key="nphotons")
    return value


def file_digest(path: str) -> tuple[str, int]:
    """``("sha256:<hex>", size in bytes)`` of a file, streamed."""
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return "sha256:" + sha.hexdigest(), size


# --- model bundles ----------------------------------------------------------------------------


def read_bundle(path: str) -> tuple[Lock, DataFile]:
    """The lock a bundle was trained from (its ``lock.toml`` member), read with ``zipfile``."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = _bundle_member(path, archive)
            text = archive.read(info).decode("utf-8")
    except FileNotFoundError:
        msg = "no such file"
        raise DataError(msg, path=path) from None
    except (*ZIP_ERRORS, UnicodeDecodeError) as exc:
        msg = f"not a model bundle ({exc})"
        raise DataError(msg, path=path) from None
    try:
        lock = loads_lock(text, source=f"{path}[{BUNDLE_LOCK}]")
    except LockError as exc:
        msg = f"its lock is invalid: {exc}"
        raise DataError(msg, path=path, key=BUNDLE_LOCK) from None
    sha, size = file_digest(path)
    return lock, DataFile(input=DataInput(role="bundle", path=path, sha256=sha, size=size))


def _bundle_member(path: str, archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    for info in archive.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in re.split(r"[\\/]", name):
            msg = f"unsafe member name {name!r}"
            raise DataError(msg, path=path)
    info = next((i for i in archive.infolist() if i.filename == BUNDLE_LOCK), None)
    if info is None:
        msg = "not a model bundle: no lock.toml member"
        raise DataError(msg, path=path, key=BUNDLE_LOCK)
    if info.file_size > MAX_BUNDLE_LOCK_BYTES:
        msg = f"{BUNDLE_LOCK} is {info.file_size} bytes; a lock is far smaller"
        raise DataError(msg, path=path)
    return info


# --- the host ---------------------------------------------------------------------------------


@frozen(kw_only=True)
class HostFacts:
    """The compiling process and machine.

    ``accelerator`` is ``"cuda"``, ``"mps"`` or ``"cpu"``; ``device_count`` counts its devices.
    ``cwd`` anchors relative paths given by environment variables and ``--set``.
    """

    cwd: str
    accelerator: str = "cpu"
    device_count: int = 1
    terminal: bool = False
    installed: frozenset[str] = frozenset()
    environment: Environment = attrs.field(
        factory=lambda: Environment(python=platform.python_version(), platform=sys.platform)
    )


def read_host(environ: Mapping[str, str], *, full: bool = True) -> HostFacts:
    """Facts of this host. ``full=False`` skips versions and git (what ``validate`` needs)."""
    cuda = torch_cuda_version()
    accelerator, count = _accelerator(environ, cuda)
    installed = frozenset(p for p in OPTIONAL_LOGGERS if importlib.util.find_spec(p) is not None)
    host = HostFacts(
        cwd=os.getcwd(),
        accelerator=accelerator,
        device_count=count,
        terminal=sys.stderr.isatty(),
        installed=installed,
    )
    return attrs.evolve(host, environment=read_environment(cuda)) if full else host


def torch_cuda_version() -> str | None:
    """The CUDA version torch was built with, read from ``torch/version.py`` as text."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    version_file = os.path.join(next(iter(spec.submodule_search_locations)), "version.py")
    try:
        with open(version_file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


def _accelerator(environ: Mapping[str, str], cuda: str | None) -> tuple[str, int]:
    gpus = nvidia_device_count(environ) if cuda else 0
    if gpus > 0:
        return "cuda", gpus
    if sys.platform == "darwin" and platform.machine() == "arm64" and _has_torch():
        return "mps", 1
    return "cpu", 1


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def nvidia_device_count(environ: Mapping[str, str]) -> int:
    """NVIDIA GPUs present (driver entries or device nodes), limited by CUDA_VISIBLE_DEVICES."""
    present = len(glob.glob("/proc/driver/nvidia/gpus/*")) or len(glob.glob("/dev/nvidia[0-9]*"))
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    usable = 0
    for entry in visible.split(","):
        # CUDA stops at the first invalid entry; "-1" is the usual way to hide every device.
        if not entry.strip() or entry.strip().startswith("-"):
            break
        usable += 1
    return min(usable, present)


def read_environment(cuda: str | None) -> Environment:
    """Interpreter, platform, library versions and git state of this package's checkout."""
    commit, dirty = _git_state(os.path.dirname(os.path.abspath(__file__)))
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        torch=_version("torch"),
        lightning=_version("lightning"),
        numpy=_version("numpy"),
        cuda=cuda,
        git_commit=commit,
        git_dirty=dirty,
    )


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_state(folder: str) -> tuple[str | None, bool | None]:
    """HEAD commit and dirty flag of the git work tree holding ``folder``; None outside one."""
    head = _git(folder, "rev-parse", "HEAD")
    if head is None:
        return None, None
    status = _git(folder, "status", "--porcelain")
    return head.strip(), bool(status.strip()) if status is not None else None


def _git(folder: str, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", folder, *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
