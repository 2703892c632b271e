"""Reports over compiled runs: where one setting came from (``explain``) and how two runs
differ (``diff``)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from ptycho_spec.convert import show
from ptycho_spec.errors import Origin, SpecError, SpecIssue
from ptycho_spec.lock import Lock
from ptycho_spec.merge import Setting
from ptycho_spec.rules import where
from ptycho_spec.schema import Canonical, Execution
from ptycho_spec.tree import KeyPath, dotted, key_path, schema_leaves, value_at


def run_settings(lock: Lock) -> dict[str, Any]:
    """Every resolved setting of a lock by spec key (``model.N``, ``execution.devices``)."""
    resolved = lock.resolved
    settings = {dotted(p): value_at(resolved.canonical, p) for p, _ in schema_leaves(Canonical)}
    settings |= {
        dotted(p): value_at(resolved.execution, p[1:])
        for p, _ in schema_leaves(Execution, ("execution",))
    }
    return settings


def explain(
    key: str, lock: Lock, history: Mapping[KeyPath, Sequence[Setting]], *, source: str
) -> str:
    """The final value of ``key``, then every layer that set it, lowest first, with locations.

    ``source`` is the spec's path, for the diagnostic when ``key`` is not a setting.
    """
    settings = run_settings(lock)
    if key not in settings:
        close = difflib.get_close_matches(key, list(settings), n=1, cutoff=0.6)
        hint = f'; did you mean "{close[0]}"?' if close else " (name one such as model.N)"
        raise SpecError([SpecIssue(key, f"not a setting{hint}", Origin("spec", file=source))])
    rows = [
        (s.origin.layer, _location(s.origin), show(s.value)) for s in history.get(key_path(key), ())
    ]
    final = lock.provenance.get(key)
    if final is not None and final.layer in ("inferred", "derived", "host", "bundle"):
        rows.append((final.layer, _location(final), show(settings[key])))
    width = max(len(location) for _, location, _ in rows) if rows else 0
    lines = [f"  {layer:<9}{location:<{width}}  {value}" for layer, location, value in rows]
    return "\n".join([f"{key} = {show(settings[key])}", *lines])


def _location(origin: Origin) -> str:
    """Where a layer set a value; for a resolved value, the file and reason it came from."""
    if origin.layer == "default":
        return "(built in)"
    if origin.layer in ("spec", "extends", "env", "set"):
        return where(origin)
    return ": ".join(p for p in (origin.file, origin.detail) if p) or origin.layer


def diff(a: Lock, b: Lock) -> list[str]:
    """``key: a → b`` for every resolved setting that differs (empty when the runs match)."""
    left, right = run_settings(a), run_settings(b)
    return [
        f"{key}: {show(left[key])} → {show(right[key])}" for key in left if left[key] != right[key]
    ]
