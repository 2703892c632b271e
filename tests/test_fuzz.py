"""Fuzzing through the real entry points: every input ends in exit code 0, 2 or 4 with one-line
diagnostics (or a ``DataError`` from a reader), never another exception.

(a) spec text: random mutations of the examples (lines deleted or repeated, values of other
types, unicode, huge numbers, deep nesting, repeated tables, truncation) through
``ptycho-spec validate`` and ``compile``; (b) data files: NPZ scans with missing keys, other
dtypes and shapes, NaN/inf, empty and object arrays, and garbage bytes, through ``compile`` and
``runner.data.npz.read_npz``; ptychodus HDF5 products with datasets and attributes removed or
of other types, through ``compile``.

Inputs that once broke a reader are kept in ``tests/data/fuzz_corpus`` (README.md there says
what each broke) and replayed by :class:`TestCorpus`. ``PTYCHO_EXAMPLES=2000`` makes a longer
fuzzing session.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ptychodus_data import CENTER_M, PIXEL_M, write_diffraction, write_product

from ptycho_spec.cli import main
from ptycho_spec.errors import DataError
from ptycho_spec.facts import read_bundle as bundle_facts
from runner.data.npz import read_npz
from runner.train.bundle import read_bundle

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "data" / "fuzz_corpus"
EXAMPLES = sorted(p.name for p in (REPO / "examples").glob("*.toml"))
FUZZ = settings(
    max_examples=int(os.environ.get("PTYCHO_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# One diagnostic per line: "warning: ...", "error: ...", "wrote ...", or "WHERE: ..." (a file,
# file:line, <spec>, --set or PTYCHO__ variable); a traceback or a message broken over lines
# does not start that way.
DIAGNOSTIC = re.compile(r"(warning|error): \S|wrote \S|\S[^:\n]*(:\d+)?: \S")


def cli(*args: str) -> tuple[int, str]:
    """Exit code and stderr of ``ptycho-spec ARGS`` run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue()


def assert_handled(code: int, err: str) -> None:
    assert code in (0, 2, 4), err
    for line in err.splitlines():
        assert DIAGNOSTIC.match(line), f"not a one-line diagnostic: {line!r}\n{err}"


def validate_and_compile(spec: Path) -> None:
    assert_handled(*cli("validate", str(spec)))
    assert_handled(*cli("compile", str(spec), "-o", str(spec.with_suffix(".lock.toml"))))


# --- (a) spec text ---------------------------------------------------------------------------

VALUES = st.sampled_from(
    [
        '"text"',
        "7",
        "-3",
        "2.5",
        "true",
        "[1, 2]",
        "{ a = 1 }",
        "1979-05-27",
        "07:32:00",
        '"auto"',
        '"none"',
        "1e309",
        "-1e309",
        "nan",
        "-inf",
        "-0",
        "1e-320",
        "9223372036854775807",
        "-9223372036854775808",
        "[]",
        "{}",
        "'''two\nlines'''",
        '"\\u0000\\t"',
        "[[1], [2, [3]]]",
    ]
)
HEADERS = st.sampled_from(
    [
        "[model]",
        "[execution]",
        "[data.simulate]",
        "[[run]]",
        "[run.seed]",
        "[a.b.c]",
        "spec_version = 1",
        "spec_version = 0",
        'extends = ["base.toml"]',
        'extends = ["extends.toml"]',
        'extends = ["absent.toml"]',
        "extends = 5",
    ]
)


@st.composite
def mutation(draw: st.DrawFn) -> Callable[[list[str]], list[str]]:
    """One edit of a spec's lines."""
    at = draw(st.integers(0, 10**6))
    kind = draw(st.sampled_from(["delete", "repeat", "retype", "nest", "char", "insert", "cut"]))

    def pick(lines: list[str]) -> int:
        return at % max(len(lines), 1)

    if kind == "delete":
        return lambda lines: [x for i, x in enumerate(lines) if i != pick(lines)]
    if kind == "repeat":
        return lambda lines: [*lines, lines[pick(lines)]] if lines else lines
    if kind == "retype":
        value = draw(VALUES)
        return lambda lines: [
            x.split("=")[0] + "= " + value if i == pick(lines) and "=" in x else x
            for i, x in enumerate(lines)
        ]
    if kind == "nest":
        depth = draw(st.sampled_from([3, 40, 400, 2000]))
        opened, closed = draw(st.sampled_from([("[", "]"), ("{ a = ", " }")]))
        inner = "" if opened == "[" else "1"
        return lambda lines: [*lines, f"deep = {opened * depth}{inner}{closed * depth}"]
    if kind == "char":
        text = draw(st.text(min_size=1, max_size=3))
        return lambda lines: [
            x[: at % (len(x) + 1)] + text + x[at % (len(x) + 1) :] if i == pick(lines) else x
            for i, x in enumerate(lines)
        ]
    if kind == "insert":
        line = draw(HEADERS)
        return lambda lines: [*lines[: pick(lines)], line, *lines[pick(lines) :]]
    return lambda lines: lines[: pick(lines)]


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/ (bases resolve beside it) where mutated specs are written."""
    folder = tmp_path_factory.mktemp("examples")
    for name in EXAMPLES:
        shutil.copy(REPO / "examples" / name, folder / name)
    return folder


@FUZZ
@given(name=st.sampled_from(EXAMPLES), edits=st.lists(mutation(), min_size=1, max_size=4))
def test_mutated_specs(
    examples: Path, name: str, edits: list[Callable[[list[str]], list[str]]]
) -> None:
    """validate and compile of a mutated example: exit 0, 2 or 4, one line per diagnostic."""
    lines = (examples / name).read_text().split("\n")
    for edit in edits:
        lines = edit(lines)
    spec = examples / f"mutated_{name}"
    spec.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    validate_and_compile(spec)


# --- (b) data files --------------------------------------------------------------------------

CONTRACT = {
    "diff3d": ("M", "N", "N"),
    "diffraction": ("M", "N", "N"),
    "xcoords": ("M",),
    "ycoords": ("M",),
    "probeGuess": ("N", "N"),
    "objectGuess": (96, 96),
    "scan_index": ("M",),
    "valid_mask": ("N", "N"),
    "nphotons": (),
}
DTYPES = st.sampled_from(
    ["float32", "float64", "int16", "uint8", "complex64", "bool", "float16", "U2", "S2", "M8[s]"]
)
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e30])


@st.composite
def array_for(draw: st.DrawFn, key: str, m: int, n: int) -> np.ndarray:
    """An array for ``key``: mostly the contract's shape, sometimes not; some dtype; values
    ones (coordinates spread out) with perhaps one special value."""
    shape = tuple({"M": m, "N": n}.get(d, d) for d in CONTRACT[key])  # type: ignore[misc]
    if draw(st.booleans()) and draw(st.booleans()):
        shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, n]), max_size=4)))
    dtype = np.dtype(draw(DTYPES))
    values = np.ones(shape) * (40 + np.arange(shape[-1]) if shape and key.endswith("coords") else 1)
    array = np.asarray(values).astype(dtype)
    if array.size and dtype.kind in "fc" and draw(st.booleans()):
        with np.errstate(over="ignore"):  # 1e30 does not fit float16: inf, also wanted
            array.flat[draw(st.integers(0, array.size - 1))] = draw(SPECIAL)
    return array


@st.composite
def npz_files(draw: st.DrawFn) -> Callable[[Path], None]:
    """A writer of one NPZ (or of bytes that are not one)."""
    kind = draw(st.sampled_from(["contract", "contract", "contract", "object", "bytes"]))
    if kind == "bytes":
        data = draw(st.sampled_from([b"", b"text\n", b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"]))
        return lambda path: path.write_bytes(data + draw(st.binary(max_size=64)))
    m, n = draw(st.sampled_from([1, 4, 9])), draw(st.sampled_from([1, 8, 64]))
    keys = draw(st.sets(st.sampled_from(list(CONTRACT)), min_size=1))
    arrays = {k: draw(array_for(k, m, n)) for k in keys}
    if kind == "object":
        arrays["extra"] = np.array([{"x": 1}], dtype=object)
    save = np.savez_compressed if draw(st.booleans()) else np.savez
    return lambda path: save(path, **arrays)


def npz_spec(data: Path, extra: str) -> Path:
    spec = data.with_suffix(".toml")
    spec.write_text(
        f'spec_version = 1\n[run]\ntask = "train+infer"\n[data]\nsource = "npz"\n'
        f'train_file = "{data}"\n{extra}\nn_groups = "all"\n[execution]\naccelerator = "cpu"\n'
    )
    return spec


def check_npz(data: Path) -> None:
    """compile (both test-data layouts) and read_npz (both measurements) of ``data``."""
    for extra in ("test_fraction = 0.5", f'test_file = "{data}"\nmeasurement = "counts"'):
        assert_handled(*cli("compile", str(npz_spec(data, extra)), "-o", str(data) + ".lock"))
    for measurement in ("amplitude", "counts"):
        with contextlib.suppress(DataError):
            read_npz(data, measurement=measurement)  # type: ignore[arg-type]


@FUZZ
@given(write=npz_files())
def test_npz_files(tmp_path_factory: pytest.TempPathFactory, write: Callable[[Path], None]) -> None:
    """compile and read_npz of a fuzzed NPZ: exit 0, 2 or 4 / DataError, nothing else."""
    data = tmp_path_factory.mktemp("npz") / "scan.npz"
    write(data)
    check_npz(data)


def ptychodus_pair(folder: Path) -> Path:
    """A valid product and diffraction file (3 positions) and a spec naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    index = np.arange(3) + 10
    write_product(
        folder / "product.h5",
        probe=np.ones((64, 64), np.complex64),
        index=index,
        x_m=(np.arange(3) * 2.0 - 37.5) * PIXEL_M + CENTER_M[0],
        y_m=np.full(3, CENTER_M[1]),
        obj=np.ones((96, 96), np.complex64),
    )
    write_diffraction(folder / "diffraction.h5", np.full((3, 64, 64), 5, np.int32), index=index)
    return ptychodus_spec(folder)


def ptychodus_spec(folder: Path) -> Path:
    spec = folder / "spec.toml"
    spec.write_text(
        'spec_version = 1\n[run]\ntask = "train+infer"\n[data]\nsource = "ptychodus"\n'
        'n_groups = "all"\ntest_fraction = 0.5\n[data.ptychodus]\nproduct_file = "product.h5"\n'
        'diffraction_file = "diffraction.h5"\n[execution]\naccelerator = "cpu"\n'
    )
    return spec


H5_VALUES = st.sampled_from(
    [
        np.array(b"text"),
        np.zeros(0),
        np.full(3, np.nan),
        np.ones(3, np.int8),
        np.ones((3, 64, 64), np.float32),
        np.ones((2, 2)),
        np.float64(2.0),
        np.ones(3, bool),
    ]
)
H5_ATTRIBUTES = st.sampled_from(["x", np.array([1.0, 2.0]), np.nan, -1.0, 0.0, 7, True, b"b"])


@st.composite
def h5_edit(draw: st.DrawFn) -> Callable[[h5py.File], None]:
    """Delete a dataset, replace it (with other data or a group), or change an attribute."""
    at, kind = (
        draw(st.integers(0, 99)),
        draw(st.sampled_from(["delete", "replace", "group", "attr"])),
    )
    value, attribute = draw(H5_VALUES), draw(H5_ATTRIBUTES)

    def edit(h5: h5py.File) -> None:
        keys = sorted(h5)
        if not keys:
            return
        key = keys[at % len(keys)]
        if kind == "attr":
            target = h5 if at % 2 else h5[key]
            names = sorted(target.attrs) or ["far_field"]
            target.attrs[names[at % len(names)]] = attribute
            return
        del h5[key]
        if kind == "replace":
            h5[key] = value
        elif kind == "group":
            h5.create_group(key)

    return edit


@FUZZ
@given(
    which=st.sampled_from(["product.h5", "diffraction.h5"]),
    edits=st.lists(h5_edit(), min_size=1, max_size=3),
)
def test_ptychodus_files(
    tmp_path_factory: pytest.TempPathFactory, which: str, edits: list[Callable[[h5py.File], None]]
) -> None:
    """compile of a ptychodus source whose product or diffraction HDF5 was edited."""
    spec = ptychodus_pair(tmp_path_factory.mktemp("ptychodus"))
    with h5py.File(spec.parent / which, "r+") as h5:
        for edit in edits:
            edit(h5)
    assert_handled(*cli("compile", str(spec), "-o", str(spec.parent / "lock.toml")))


# --- the corpus ------------------------------------------------------------------------------


def replay(path: Path, tmp_path: Path) -> None:
    """Run one corpus input through the entry points that read its kind of file."""
    if path.suffix in (".toml", ".yaml"):
        shutil.copy(path, tmp_path / path.name)
        validate_and_compile(tmp_path / path.name)
    elif path.suffix == ".npz":
        shutil.copy(path, tmp_path / path.name)
        check_npz(tmp_path / path.name)
    elif path.suffix == ".bundle":
        with pytest.raises(DataError):
            read_bundle(path)
        with contextlib.suppress(DataError):
            bundle_facts(str(path))
    elif path.suffix == ".ptychodus":
        shutil.copytree(path, tmp_path / path.name)
        spec = ptychodus_spec(tmp_path / path.name)
        assert_handled(*cli("compile", str(spec), "-o", str(tmp_path / "lock.toml")))
    else:
        msg = f"no replay for {path.name}"
        raise AssertionError(msg)


class TestCorpus:
    @pytest.mark.parametrize(
        "name", sorted(p.name for p in CORPUS.iterdir() if p.name != "README.md")
    )
    def test_replays(self, name: str, tmp_path: Path) -> None:
        """Each input that once broke a reader now ends in a diagnostic."""
        replay(CORPUS / name, tmp_path)

    def test_every_input_is_described(self) -> None:
        """README.md says what each corpus input broke."""
        readme = (CORPUS / "README.md").read_text()
        assert all(f"`{p.name}`" in readme for p in CORPUS.iterdir() if p.name != "README.md")

    def test_bundles_are_zips(self) -> None:
        """The bundle inputs are zips, so the readers get past the zip check."""
        assert all(zipfile.is_zipfile(p) for p in CORPUS.glob("*.bundle"))
