"""The lockfile: a fully resolved run, its provenance, inputs and environment, as TOML.

Tables (keys sorted, every field explicit, ``None`` written ``"none"``, no timestamps):

* ``[lock]``: ``format_version``, ``format_revision``, ``tool_version``, ``spec_version``,
  ``digest`` (sha256 of the canonical JSON of everything but the digest itself and
  ``project_dir``), ``run_digest`` (of ``canonical`` and ``execution`` only: the run's
  identity), ``[lock.tables]`` (one digest per table, so that an edited table can be named) and
  ``project_dir`` (the folder of the spec compiled: paths below it are written relative to it,
  see ``ptycho_spec.locate``).
* ``[canonical]`` (what is computed) and ``[execution]`` (how it runs): a ``Resolved``.
* ``[provenance]``: spec key → ``{layer, file?, line?, detail?}``.
* ``[inputs]``: spec files and data files with sha256, size, and array keys/shapes/dtypes.
* ``[environment]``: interpreter, library versions, CUDA, git commit and dirty flag.

A format version grows by revisions that only add keys. A lock of an earlier revision is read
with the values that make it mean what it meant when it was written, and written back without
them, so that its digests still hold and it replays as it ran. Likewise a value written under a
name the compiler no longer writes (``execution.accelerator = "gpu"``) is read as the one name
(``"cuda"``) and written back as it was.

``specs/lockfile-v1.md`` documents the format; the runner reads a lock only through
:func:`read_lock` / :func:`loads_lock`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs
import cattrs
import tomli_w
from attrs import field, frozen

from ptycho_spec import __version__, atomic
from ptycho_spec.convert import structure, to_toml_tree
from ptycho_spec.errors import LockError, Origin, SpecIssue
from ptycho_spec.schema import (
    ACCELERATOR_ALIASES,
    AUTO,
    SPEC_VERSION,
    Canonical,
    Execution,
    Resolved,
)
from ptycho_spec.toml_lines import decode_error, parse_toml
from ptycho_spec.tree import KeyPath, dotted, schema_leaves, value_at

FORMAT_VERSION: Final = 1
FORMAT_REVISION: Final = 5
# The keys each revision of format 1 added, with the values that reproduce how a lock written
# before them ran: revision 0 had no refinement and averaged patches without aligning them;
# before revision 2 every path was absolute (no project folder is needed to find the files) and
# the replaying host chose the thread count.
ADDED_IN_REVISION: Final = MappingProxyType(
    {
        1: MappingProxyType(
            {
                ("lock", "format_revision"): 0,
                ("canonical", "inference", "align_patches"): False,
                ("canonical", "refine"): MappingProxyType(
                    {"batch_size": 32, "iterations": 0, "positions": False, "probe": False}
                ),
                ("canonical", "seeds", "refine"): 0,
            }
        ),
        # Revision 1 named files by absolute path and left the intra-op thread count to torch
        # on the replaying host.
        2: MappingProxyType({("lock", "project_dir"): None, ("execution", "cpu_threads"): None}),
        # Revision 2 had no learning-rate warm-up.
        3: MappingProxyType({("canonical", "training", "warmup_steps"): 0}),
        # Revision 3 fed the generator the patterns as they are.
        4: MappingProxyType({("canonical", "model", "center_input"): False}),
        # Revision 4 trained with the data's probe.
        5: MappingProxyType({("canonical", "training", "calibrate_probe"): 0}),
    }
)
DIGESTED_TABLES: Final = ("canonical", "environment", "execution", "inputs", "provenance")
# Keys of ``[lock]`` outside ``digest``: the digest itself, and where the project was compiled,
# which must not make the same run differ between two checkouts (``ptycho_spec.locate``).
UNDIGESTED: Final = ("digest", "project_dir")
# Values earlier compilers wrote under another name, by key: old name → the one name.
RENAMED_VALUES: Final = MappingProxyType({("execution", "accelerator"): ACCELERATOR_ALIASES})


@frozen(kw_only=True)
class ArrayInfo:
    """One array of an NPZ input: shape and numpy dtype name (``"float32"``)."""

    shape: tuple[int, ...]
    dtype: str


@frozen(kw_only=True)
class SpecInput:
    """A spec file that took part (the top spec and every ``extends`` base)."""

    path: str
    sha256: str
    size: int  # bytes


@frozen(kw_only=True)
class DataInput:
    """A data file the run reads; ``role`` is ``train``, ``test``, ``probe``, ``product``,
    ``diffraction`` (the two files of a ptychodus source) or ``bundle``."""

    role: str
    path: str
    sha256: str
    size: int  # bytes
    arrays: Mapping[str, ArrayInfo] = field(factory=dict)


@frozen(kw_only=True)
class Inputs:
    """Every file the compiled run depends on, with content hashes (for ``verify``)."""

    specs: tuple[SpecInput, ...] = ()
    data: tuple[DataInput, ...] = ()


@frozen(kw_only=True)
class Environment:
    """The compiling environment; absent items are ``None`` (written ``"none"``)."""

    python: str
    platform: str
    torch: str | None = None
    lightning: str | None = None
    numpy: str | None = None
    cuda: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None


@frozen(kw_only=True)
class Header:
    """The ``[lock]`` table."""

    format_version: int
    format_revision: int
    tool_version: str
    spec_version: int
    digest: str
    run_digest: str
    tables: Mapping[str, str]
    # The folder of the spec compiled (absolute): where relative paths were relative to. A hint
    # for finding the files again, outside the digest (None before revision 2: paths absolute).
    project_dir: str | None = None


@frozen(kw_only=True)
class Lock:
    """A compiled run. ``warnings`` are the compiler's diagnostics; they are not written.
    ``written_as`` holds the values a lock read from text held under an older name
    (``RENAMED_VALUES``), by key: written back so, its digests hold."""

    header: Header
    resolved: Resolved
    provenance: Mapping[str, Origin]
    inputs: Inputs
    environment: Environment
    warnings: tuple[SpecIssue, ...] = field(default=(), eq=False, repr=False)
    written_as: Mapping[KeyPath, Any] = field(factory=dict, eq=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The lock as TOML-ready nested dicts (the digests included)."""
        body = _body(self.resolved, self.provenance, self.inputs, self.environment)
        body["lock"] = to_toml_tree(self.header)
        for path in _added_after(self.header.format_revision):
            _pop(body, path)
        for path, value in self.written_as.items():
            _put(body, path, value)
        return _sorted(body)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lock:
        """Check the version and digest of a lock read from TOML, then structure it (a lock of
        an earlier revision with the values it was written without)."""
        _check_version(data)
        _check_digest(data)
        upgraded = _upgrade(data)
        written_as = _rename_values(upgraded)
        return attrs.evolve(_structure_lock(upgraded), written_as=written_as)

    def validate(self) -> Lock:
        """Round trip through the dict form: raises ``LockError`` if anything is off."""
        return Lock.from_dict(self.to_dict())


def make_lock(
    resolved: Resolved,
    provenance: Mapping[str, Origin],
    inputs: Inputs,
    environment: Environment,
    warnings: tuple[SpecIssue, ...] = (),
    project_dir: str | None = None,
) -> Lock:
    """Assemble a lock and compute its digests (``project_dir`` stays outside them)."""
    body = _sorted(_body(resolved, provenance, inputs, environment))
    tables = {name: _digest(body[name]) for name in DIGESTED_TABLES}
    run_digest = _digest({"canonical": body["canonical"], "execution": body["execution"]})
    partial = {
        "format_version": FORMAT_VERSION,
        "format_revision": FORMAT_REVISION,
        "tool_version": __version__,
        "spec_version": SPEC_VERSION,
        "run_digest": run_digest,
        "tables": tables,
    }
    digest = _digest({**body, "lock": partial})
    header = Header(digest=digest, project_dir=project_dir, **partial)  # type: ignore[arg-type]
    return Lock(
        header=header,
        resolved=resolved,
        provenance=dict(provenance),
        inputs=inputs,
        environment=environment,
        warnings=warnings,
    )


def _body(
    resolved: Resolved, provenance: Mapping[str, Origin], inputs: Inputs, environment: Environment
) -> dict[str, Any]:
    return {
        "canonical": to_toml_tree(resolved.canonical),
        "execution": to_toml_tree(resolved.execution),
        "provenance": {key: _origin_table(o) for key, o in provenance.items()},
        "inputs": to_toml_tree(inputs),
        "environment": to_toml_tree(environment),
    }


def _origin_table(origin: Origin) -> dict[str, Any]:
    """An origin without its empty members (``file``/``line``/``detail`` are optional)."""
    return {k: v for k, v in attrs.asdict(origin).items() if v is not None}


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _digest(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``: sorted keys, compact, UTF-8.

    A compiled lock holds only finite numbers; ``str`` covers what an edited file may hold
    (dates, NaN) so that checking it reports a mismatch instead of failing.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --- reading ----------------------------------------------------------------------------------


def _check_version(data: Mapping[str, Any]) -> None:
    header = data.get("lock")
    version = header.get("format_version") if isinstance(header, Mapping) else None
    if not isinstance(version, int) or isinstance(version, bool):
        msg = "not a ptycho-spec lock: [lock] format_version is missing"
        raise LockError(msg)
    if version != FORMAT_VERSION:
        msg = (
            f"lock format_version {version} is not supported; this ptycho-spec "
            f"({__version__}) reads format_version {FORMAT_VERSION}"
        )
        raise LockError(msg)
    _check_revision(data["lock"])


def _check_revision(header: Mapping[str, Any]) -> None:
    revision = _revision(header)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        msg = f"invalid lock: [lock] format_revision must be an integer ≥ 0 (got {revision!r})"
        raise LockError(msg)
    if revision > FORMAT_REVISION:
        msg = (
            f"lock format_revision {revision} is newer than this ptycho-spec ({__version__}) "
            f"reads (up to {FORMAT_REVISION}); upgrade ptycho-spec"
        )
        raise LockError(msg)


def _revision(header: Mapping[str, Any]) -> Any:
    """The format revision of a lock's header; revision 0 wrote none."""
    return header.get("format_revision", 0)


def _added_after(revision: int) -> dict[KeyPath, Any]:
    """The keys later revisions added, with the values a lock of ``revision`` means by them."""
    return {
        path: value
        for later, added in ADDED_IN_REVISION.items()
        if later > revision
        for path, value in added.items()
    }


def _upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """A lock of an earlier revision with the keys it was written without; a key its revision
    did not have is refused, since writing the lock back would drop it."""
    revision = _revision(data["lock"])
    upgraded = copy.deepcopy(dict(data))
    for path, value in _added_after(revision).items():
        *parents, last = path
        table: Any = upgraded
        for name in parents:
            table = table.get(name) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            continue  # a missing table is reported when the lock is structured
        if last in table:
            msg = f"invalid lock: {dotted(path)} is not part of format revision {revision}"
            raise LockError(msg)
        table[last] = to_toml_tree(value)
    return upgraded


def _rename_values(data: dict[str, Any]) -> dict[KeyPath, Any]:
    """Rewrite, in place, values held under an older name (``RENAMED_VALUES``) to the one name;
    return the old values by key."""
    renamed: dict[KeyPath, Any] = {}
    for (*parents, last), names in RENAMED_VALUES.items():
        table: Any = data
        for name in parents:
            table = table.get(name) if isinstance(table, dict) else None
        value = table.get(last) if isinstance(table, dict) else None
        if isinstance(value, str) and value in names:
            renamed[(*parents, last)] = value
            table[last] = names[value]
    return renamed


def _put(tree: dict[str, Any], path: KeyPath, value: Any) -> None:
    *parents, last = path
    for name in parents:
        tree = tree[name]
    tree[last] = value


def _pop(tree: dict[str, Any], path: KeyPath) -> None:
    *parents, last = path
    for name in parents:
        tree = tree[name]
    del tree[last]


def _check_digest(data: Mapping[str, Any]) -> None:
    header = {k: v for k, v in data["lock"].items() if k not in UNDIGESTED}
    stored = data["lock"].get("digest")
    body = {k: v for k, v in data.items() if k != "lock"}
    if stored == _digest({**body, "lock": header}):
        return
    recorded = header.get("tables") if isinstance(header.get("tables"), Mapping) else {}
    changed = [t for t in DIGESTED_TABLES if recorded.get(t) != _digest(body.get(t))]
    which = f"; changed: {', '.join(f'[{t}]' for t in changed)}" if changed else ""
    msg = f"digest mismatch: the file was edited after it was written{which}; recompile the spec"
    raise LockError(msg)


def _structure_lock(data: Mapping[str, Any]) -> Lock:
    try:
        lock = Lock(
            header=structure(data.get("lock"), Header),
            resolved=Resolved(
                canonical=structure(data.get("canonical"), Canonical),
                execution=structure(data.get("execution"), Execution),
            ),
            provenance=structure(data.get("provenance"), dict[str, Origin]),
            inputs=structure(data.get("inputs"), Inputs),
            environment=structure(data.get("environment"), Environment),
        )
    except cattrs.BaseValidationError as exc:
        raise LockError("invalid lock: " + "; ".join(cattrs.transform_error(exc))) from None
    except (ValueError, TypeError) as exc:
        msg = f"invalid lock: {exc}"
        raise LockError(msg) from None
    _check_resolved(lock.resolved)
    return lock


def _check_resolved(resolved: Resolved) -> None:
    """A lock must not hold ``"auto"`` in any field that the compiler resolves."""
    tables = {"canonical": resolved.canonical, "execution": resolved.execution}
    unresolved = [
        dotted((name, *path))
        for name, obj in tables.items()
        for path, attribute in schema_leaves(type(obj))
        if attribute.metadata.get("auto") and value_at(obj, path) == AUTO
    ]
    if unresolved:
        msg = f'invalid lock: unresolved "auto" in {", ".join(unresolved)}'
        raise LockError(msg)


# --- text and files ---------------------------------------------------------------------------


def dumps_lock(lock: Lock) -> str:
    """The lock as TOML text; identical locks give identical text."""
    data = lock.to_dict()
    provenance = data.pop("provenance")
    lines = [f"{_toml_key(k)} = {_inline_table(v)}" for k, v in provenance.items()]
    return tomli_w.dumps(data) + "\n[provenance]\n" + "".join(f"{line}\n" for line in lines)


def _toml_key(key: str) -> str:
    return tomli_w.dumps({key: 0}).rsplit(" = ", 1)[0]


def _inline_table(table: Mapping[str, Any]) -> str:
    """``{ layer = "spec", line = 3 }``: tomli-w writes tables as sections, so one line is
    assembled here from tomli-w's own rendering of each key and value."""
    items = (tomli_w.dumps({k: v}).rstrip("\n") for k, v in table.items())
    return "{ " + ", ".join(items) + " }"


def loads_lock(text: str, *, source: str = "<lock>") -> Lock:
    """Parse and check a lock's TOML text; ``LockError`` (exit 3) on any problem."""
    try:
        data = parse_toml(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = decode_error(exc)
        msg = (
            f"{source}:{line}: not valid TOML: {message}"
            if line
            else f"{source}: not valid TOML: {message}"
        )
        raise LockError(msg) from None
    try:
        return Lock.from_dict(data)
    except LockError as exc:
        msg_0 = f"{source}: {exc}"
        raise LockError(msg_0) from None


def is_lock_file(path: str | os.PathLike[str]) -> bool:
    """Whether a file is a lock (a TOML file with ``[lock]`` and ``[canonical]`` tables)."""
    try:
        with open(path, "rb") as handle:
            data = parse_toml(handle.read().decode())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data.get("lock"), dict) and "canonical" in data


def read_lock(path: str | os.PathLike[str]) -> Lock:
    """Read and check a lock file."""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        msg = f"{os.fspath(path)}: not a UTF-8 text file"
        raise LockError(msg) from None
    return loads_lock(text, source=os.fspath(path))


def write_lock(lock: Lock, path: str | os.PathLike[str]) -> None:
    """Write atomically: a temporary file in the same folder, synced, then renamed."""
    atomic.write_text(path, dumps_lock(lock))
