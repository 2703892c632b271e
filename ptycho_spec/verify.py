"""Is a lock still true of the files and the machine it names? Checked before every run from a lock.

The checks return values, :class:`Drift`, one per difference; :func:`enforce` decides which of
them stop the run (``LockError``, exit 3) and the CLI renders the rest as warnings. Rules
(``specs/lockfile-v1.md``, "Verification"):

* data (each file where :func:`ptycho_spec.locate.locate_inputs` found it): a file whose
  sha256 or size changed is an error unless drift of kind ``data`` is allowed
  (``--allow-drift data``); a file found nowhere (the error lists every place tried), or one
  whose arrays (keys, shapes, dtypes) changed, is always an error, because the lock's resolved
  values were read from them;
* environment: python, torch, lightning, numpy, CUDA or ptycho-spec versions that differ are
  warnings, errors under ``--strict``; a locked accelerator with fewer devices here than the
  lock asks for is always an error, since the run cannot execute as locked.

The digest of the lock itself is checked when it is read (:func:`ptycho_spec.lock.read_lock`).
Nothing here imports torch: ``ptycho-spec verify`` runs on a login node.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Final

import tomli_w
from attrs import frozen

from ptycho_spec import __version__
from ptycho_spec.errors import DataError, LockError
from ptycho_spec.facts import HostFacts, InputPaths, read_inputs
from ptycho_spec.locate import Located, paths_of
from ptycho_spec.lock import ArrayInfo, DataInput, Lock
from ptycho_spec.schema import Execution

ENVIRONMENT_FIELDS: Final = ("python", "torch", "lightning", "numpy", "cuda")
# The run directory files that record the drift a run went ahead with, by kind.
RECORD_FILES: Final = {"data": "data-drift.toml", "environment": "environment-drift.toml"}


@frozen(kw_only=True)
class Drift:
    """One difference between a lock and the present.

    ``kind`` is ``"data"`` or ``"environment"``; ``key`` names the file (with its role) or the
    environment item; ``blocking`` marks differences that no flag can allow.
    """

    kind: str
    key: str
    locked: str
    now: str
    blocking: bool = False

    def render(self) -> str:
        return f"{self.kind} drift: {self.key}: locked {self.locked}, now {self.now}"


def check_lock(lock: Lock, located: Sequence[Located], host: HostFacts) -> tuple[Drift, ...]:
    """Every difference between ``lock`` and the data files (as found: ``located``) and host
    as they are now."""
    return (*data_drift(lock, located), *environment_drift(lock, host))


def enforce(
    drifts: Sequence[Drift], *, strict: bool = False, allow: Collection[str] = ()
) -> tuple[Drift, ...]:
    """Raise ``LockError`` naming every difference the flags do not allow; else return them all
    (the caller warns about them and records them in the run directory)."""
    errors = [d for d in drifts if _refused(d, strict=strict, allow=allow)]
    if errors:
        msg = "lock verification failed: " + "; ".join(d.render() for d in errors)
        raise LockError(msg)
    return tuple(drifts)


def _refused(drift: Drift, *, strict: bool, allow: Collection[str]) -> bool:
    if drift.blocking:
        return True
    if drift.kind == "environment":
        return strict
    return drift.kind not in allow


def drift_records(lock: Lock, drifts: Sequence[Drift]) -> dict[str, str]:
    """Run-directory file name → TOML text recording the drift a run went ahead with."""
    records = {}
    for kind, name in RECORD_FILES.items():
        rows = [{"key": d.key, "locked": d.locked, "now": d.now} for d in drifts if d.kind == kind]
        if rows:
            records[name] = tomli_w.dumps({"lock_digest": lock.header.digest, "drift": rows})
    return records


# --- data -------------------------------------------------------------------------------------


def data_drift(lock: Lock, located: Sequence[Located]) -> tuple[Drift, ...]:
    """The data files found nowhere, or found only with content that differs from the lock."""
    missing = [x for x in located if x.path is None]
    changed = [x for x in located if x.path is not None and not x.intact]
    arrays = _arrays_now(lock, located) if changed and not missing else {}
    drifts = [_missing(x) for x in missing]
    for x in changed:
        assert x.path is not None and x.content is not None
        structure = _array_changes(x.input, arrays)
        now = _content(*x.content) + (f", arrays changed: {structure}" if structure else "")
        drifts.append(_drift(x.input, x.path, now, blocking=bool(structure)))
    return tuple(drifts)


def _missing(x: Located) -> Drift:
    return _drift(x.input, x.input.path, f"missing (tried {', '.join(x.tried)})", blocking=True)


def _drift(item: DataInput, path: str, now: str, *, blocking: bool) -> Drift:
    key = f"{path} ({item.role})"
    return Drift(
        kind="data", key=key, locked=_content(item.sha256, item.size), now=now, blocking=blocking
    )


def _content(sha256: str, size: int) -> str:
    return f"{sha256[:19]}… ({size} B)"


def _arrays_now(
    lock: Lock, located: Sequence[Located]
) -> Mapping[str, Mapping[str, ArrayInfo]] | str:
    """Role → arrays of the lock's data files as the compiler reads them now, or why it cannot."""
    paths = {r: p for r, p in paths_of(located).items() if r != "bundle"}
    try:
        facts = read_inputs(InputPaths(source=lock.resolved.canonical.data.source, paths=paths))
    except DataError as exc:
        return f"unreadable ({exc})"
    return {f.input.role: f.input.arrays for f in facts.files}


def _array_changes(item: DataInput, arrays: Mapping[str, Mapping[str, ArrayInfo]] | str) -> str:
    """The array keys, shapes or dtypes that differ from the lock, as one phrase ("" if none).

    The lock's resolved values (N, pattern counts, measurement) were read from these arrays, so
    a file whose structure changed cannot run under the lock, whatever ``--allow-drift`` says.
    """
    if item.role == "bundle":
        return ""  # a model bundle's structure is checked when the runner reads it
    if isinstance(arrays, str):
        return arrays
    now = arrays.get(item.role, {})
    return ", ".join(
        _array_change(k, item.arrays.get(k), now.get(k)) for k in _changed(item.arrays, now)
    )


def _changed(locked: Mapping[str, ArrayInfo], now: Mapping[str, ArrayInfo]) -> list[str]:
    return sorted(k for k in set(locked) | set(now) if locked.get(k) != now.get(k))


def _array_change(key: str, locked: ArrayInfo | None, now: ArrayInfo | None) -> str:
    def describe(info: ArrayInfo | None) -> str:
        return "absent" if info is None else f"{info.dtype}{list(info.shape)}"

    return f"{key} {describe(locked)} → {describe(now)}"


# --- environment ------------------------------------------------------------------------------


def environment_drift(lock: Lock, host: HostFacts) -> tuple[Drift, ...]:
    """Library, interpreter and tool versions that differ, and a missing accelerator."""
    drifts = [
        _environment(name, getattr(lock.environment, name), getattr(host.environment, name))
        for name in ENVIRONMENT_FIELDS
    ]
    drifts.append(_environment("ptycho-spec", lock.header.tool_version, __version__))
    drifts.append(_accelerator(lock.resolved.execution, host))
    return tuple(d for d in drifts if d is not None)


def _environment(key: str, locked: str | None, now: str | None) -> Drift | None:
    if locked == now:
        return None
    return Drift(kind="environment", key=key, locked=str(locked), now=str(now))


def _accelerator(execution: Execution, host: HostFacts) -> Drift | None:
    """A GPU run needs ``devices`` GPUs of its kind on this node; a CPU run always runs."""
    wanted = execution.accelerator
    if wanted == "cpu":
        return None
    available = host.device_count if host.accelerator == wanted else 0
    if available >= execution.devices:
        return None
    return Drift(
        kind="environment",
        key="accelerator",
        locked=f"{execution.devices} × {wanted}",
        now=f"{available} × {wanted} available",
        blocking=True,
    )
