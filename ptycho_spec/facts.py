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
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs
from attrs import frozen

from ptycho_spec.errors import DataError
from ptycho_spec.formats import bundle as bundle_format
from ptycho_spec.formats import npz as contract
from ptycho_spec.formats.npz import npz_arrays
from ptycho_spec.lock import ArrayInfo, DataInput, Environment, Lock
from ptycho_spec.rules import OPTIONAL_LOGGERS

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
    """One input file: its lock entry, probe side (px) and the share of the probe's intensity
    on the central N/2 × N/2 box (``data_checks.central_share``) if it holds a probe, scan facts
    if any, and ``notes``: (spec key, message) warnings about what the run will not use of it."""

    input: DataInput
    probe_side: int | None = None
    probe_central_share: float | None = None
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
    from ptycho_spec.data_checks import central_share  # numpy: on first use
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
            probe_central_share=central_share(product.probe, product.N),
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
    """Facts of a diffraction NPZ in the PtychoPINN data contract (``formats.npz``), its values
    checked (``data_checks``: an illuminating probe, measured patterns, positions a canvas
    holds)."""
    from ptycho_spec.data_checks import central_share, check_positions, check_probe

    arrays = npz_arrays(path)
    dkey = contract.diffraction_key(list(arrays), path=path)
    side = _probe_side(path, arrays)
    contract.check_kind(arrays[dkey].dtype, path=path, key=dkey)
    n_patterns, _legacy = contract.pattern_layout(arrays[dkey].shape, side, path=path, key=dkey)
    for key in contract.COORDINATES:
        _check_coords(path, key, arrays, n_patterns)
    with _open_npz(path) as npz:
        scan = _scan_facts(path, npz, dkey, n_patterns, has_object="objectGuess" in arrays)
        probe = npz["probeGuess"]
        check_probe(probe, path=path)
        check_positions(npz["xcoords"], npz["ycoords"], n=side, path=path)
    return DataFile(
        input=_data_input(path, role, arrays),
        probe_side=side,
        probe_central_share=central_share(probe, side),
        scan=scan,
    )


def read_probe_npz(path: str) -> DataFile:
    """Facts of an NPZ that provides a probe (``probeGuess``) for simulation."""
    from ptycho_spec.data_checks import central_share, check_probe  # numpy: on first use

    arrays = npz_arrays(path)
    side = _probe_side(path, arrays)
    with _open_npz(path) as npz:
        probe = npz["probeGuess"]
        check_probe(probe, path=path)
    return DataFile(
        input=_data_input(path, "probe", arrays),
        probe_side=side,
        probe_central_share=central_share(probe, side),
    )


def _data_input(path: str, role: str, arrays: Mapping[str, ArrayInfo]) -> DataInput:
    sha, size = file_digest(path)
    return DataInput(
        role=role, path=path, sha256=sha, size=size, arrays=dict(sorted(arrays.items()))
    )


def _numpy() -> Any:
    """numpy, imported on first use: ``validate`` imports this module but reads no data."""
    import numpy

    return numpy


def _open_npz(path: str) -> Any:
    np = _numpy()
    return np.load(path, allow_pickle=False)


def _probe_side(path: str, arrays: Mapping[str, ArrayInfo]) -> int:
    info = arrays.get(contract.PROBE)
    if info is None:
        msg = "no probeGuess array"
        raise DataError(msg, path=path, key=contract.PROBE)
    contract.check_kind(info.dtype, path=path, key=contract.PROBE)
    return contract.probe_side(info.shape, path=path)


def _check_coords(path: str, key: str, arrays: Mapping[str, ArrayInfo], n_patterns: int) -> None:
    info = arrays.get(key)
    if info is None:
        msg = "missing scan coordinates"
        raise DataError(msg, path=path, key=key)
    contract.check_coordinates(info.shape, n_patterns, path=path, key=key)
    contract.check_kind(info.dtype, path=path, key=key)


def _scan_facts(path: str, npz: Any, dkey: str, n_patterns: int, *, has_object: bool) -> ScanFacts:
    from ptycho_spec.data_checks import check_patterns

    np = _numpy()
    data = npz[dkey]
    if data.shape[0] != n_patterns:  # the legacy (N, N, M) layout
        data = np.moveaxis(data, -1, 0)
    contract.check_measured(data, path=path, key=dkey)
    over = " on the pixels valid_mask keeps" if "valid_mask" in npz.files else ""
    check_patterns(_good_pixels(npz, data), path=path, key=dkey, over=over)
    for key in contract.COORDINATES:
        contract.check_finite(npz[key], path=path, key=key)
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
    """The lock a bundle was trained from, the bundle checked exactly as the runner checks it
    (``formats.bundle``: members, sizes, manifest, sha256 of every member, the lock)."""
    lock = bundle_format.read_bundle_file(path).lock
    sha, size = file_digest(path)
    return lock, DataFile(input=DataInput(role="bundle", path=path, sha256=sha, size=size))


# --- the host ---------------------------------------------------------------------------------


@frozen(kw_only=True)
class HostFacts:
    """The compiling process and machine.

    ``accelerator`` is ``"cuda"``, ``"mps"`` or ``"cpu"``; ``device_count`` counts its devices.
    ``cpu_threads`` is the intra-op thread count the host offers, and ``cpu_threads_source``
    says where it came from. ``cwd`` anchors relative paths given by environment variables and
    ``--set``.
    """

    cwd: str
    accelerator: str = "cpu"
    device_count: int = 1
    cpu_threads: int = 1
    cpu_threads_source: str = "1 CPU"
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
    threads, threads_source = cpu_threads(environ)
    host = HostFacts(
        cwd=os.getcwd(),
        accelerator=accelerator,
        device_count=count,
        cpu_threads=threads,
        cpu_threads_source=threads_source,
        terminal=sys.stderr.isatty(),
        installed=installed,
    )
    return attrs.evolve(host, environment=read_environment(cuda)) if full else host


def cpu_threads(environ: Mapping[str, str]) -> tuple[int, str]:
    """Intra-op threads for this host and where the number came from: ``OMP_NUM_THREADS`` when
    it is a positive integer (torch honours it too), else the CPUs this process may run on."""
    requested = environ.get("OMP_NUM_THREADS", "").strip()
    if requested.isdigit() and int(requested) > 0:
        return int(requested), f"OMP_NUM_THREADS={requested}"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return usable or 1, f"{usable or 1} CPU(s) usable on the compiling host"


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
