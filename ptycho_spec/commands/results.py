"""Reading run directories: their status, metrics and pictures; a study's summary; the
``runs`` and ``compare`` reports.

A run directory's status: ``complete`` (``COMPLETE`` written; for a study point, with the
digest of the point's current lock, else ``stale``), ``running`` (held by a live process),
``incomplete`` (started, never completed: interrupted or failed) or ``missing``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_spec.convert import show
from ptycho_spec.errors import LockError, UsageError
from ptycho_spec.explain import run_settings
from ptycho_spec.lock import Lock, read_lock
from ptycho_spec.study.lock import STUDY_LOCK, StudyLock, point_dir, read_study_lock
from ptycho_spec.study.summary import HEADLINE, Row, flat_metrics, write_summary
from runner import rundir

LOCK_NAME = "run.lock.toml"


def status(run_dir: Path, digest: str | None = None) -> str:
    """The run directory's status (see the module docstring)."""
    if rundir.is_complete(run_dir):
        return "complete" if digest is None or completed_digest(run_dir) == digest else "stale"
    if not run_dir.is_dir():
        return "missing"
    if rundir.holder(run_dir) is not None:
        return "running"
    return "incomplete" if (run_dir / LOCK_NAME).is_file() else "missing"


def completed_digest(run_dir: Path) -> str | None:
    """The lock digest ``COMPLETE`` records, None if unreadable."""
    try:
        return json.loads((run_dir / rundir.COMPLETE).read_text())["lock_digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def metrics(run_dir: Path) -> dict[str, float]:
    """The run's ``metrics.json``, flattened; empty when it has none."""
    try:
        return flat_metrics(json.loads((run_dir / "metrics.json").read_text()))
    except (OSError, ValueError):
        return {}


def wall_time(run_dir: Path) -> float | None:
    try:
        return float(tomllib.loads((run_dir / "timing.toml").read_text())["wall_time_s"])
    except (OSError, ValueError, KeyError, tomllib.TOMLDecodeError):
        return None


def amplitude(run_dir: Path) -> np.ndarray | None:
    """The reconstructed amplitude, None when the run reconstructed nothing."""
    try:
        with np.load(run_dir / "reconstruction.npz", allow_pickle=False) as npz:
            return np.asarray(npz["amplitude"])
    except (OSError, ValueError, KeyError):
        return None


# --- a study's summary ------------------------------------------------------------------------


def study_rows(out_dir: Path, lock: StudyLock, launched: Mapping[str, str]) -> list[Row]:
    """One row per point; ``launched`` holds the status of the points this invocation ran
    (a failure is known only to the launcher), the others' is read from disk."""
    rows = []
    for point in lock.points:
        run_dir = point_dir(out_dir, point.id)
        state = launched.get(point.id) or status(run_dir, point.lock_digest)
        complete = state == "complete"
        rows.append(
            Row(
                id=point.id,
                overrides=point.overrides,
                status=state,
                wall_time_s=wall_time(run_dir) if complete else None,
                metrics=metrics(run_dir) if complete else {},
            )
        )
    return rows


def write_study_summary(
    out_dir: Path, lock: StudyLock, launched: Mapping[str, str], *, title: str
) -> list[Path]:
    rows = study_rows(out_dir, lock, launched)
    images = {
        row.id: image
        for row in rows
        if row.status == "complete" and (image := amplitude(point_dir(out_dir, row.id))) is not None
    }
    return write_summary(out_dir, rows, lock.varied, images, title=title)


# --- runs and compare -------------------------------------------------------------------------


def runs_in(target: Path) -> list[Path]:
    """The run directories ``target`` holds: a study's points in order (run or not),
    ``target`` itself if it is one, else every run directory below it."""
    if (target / STUDY_LOCK).is_file():
        return [point_dir(target, p.id) for p in read_study_lock(target).points]
    if (target / LOCK_NAME).is_file():
        return [target]
    if not target.is_dir():
        msg = f"{target}: no such directory"
        raise UsageError(msg)
    return sorted(p.parent for p in target.rglob(LOCK_NAME))


def runs_report(target: Path) -> list[str]:
    """``ptycho-spec runs``: each run's status, task, wall time and headline metrics."""
    found = runs_in(target)
    if not found:
        return [f"{target}: no runs"]
    header = ["run", "status", "task", "wall_time_s", *HEADLINE]
    rows = []
    for run_dir in found:
        flat = metrics(run_dir)
        lock = _lock_or_none(run_dir)
        task = lock.resolved.canonical.run.task if lock else "-"
        row = [os.path.relpath(run_dir, target), status(run_dir), task]
        row += [_number(wall_time(run_dir)), *(_number(flat.get(m)) for m in HEADLINE)]
        rows.append(row)
    return table(header, rows)


def compare_report(targets: Sequence[Path]) -> list[str]:
    """``ptycho-spec compare``: the settings that differ between the runs, then their metrics
    side by side; a study stands for its points that have started."""
    found = [
        run
        for target in targets
        for run in runs_in(target)
        if (run / LOCK_NAME).is_file() or not (target / STUDY_LOCK).is_file()
    ]
    if len(found) < 2:
        msg = "compare needs at least two runs (run directories, or a study with two points)"
        raise UsageError(msg)
    names = [str(run_dir) for run_dir in found]
    settings = [run_settings(_lock(run_dir)) for run_dir in found]
    differ = [k for k in settings[0] if any(s.get(k) != settings[0][k] for s in settings[1:])]
    lines = ["settings that differ:"]
    lines += table(["setting", *names], [[k, *(show(s.get(k)) for s in settings)] for k in differ])
    if not differ:
        lines.append("  (none: the same run settings)")
    flats = [metrics(run_dir) for run_dir in found]
    keys = list(
        dict.fromkeys(
            [*(m for m in HEADLINE if any(m in f for f in flats)), *(m for f in flats for m in f)]
        )
    )
    lines += ["", "metrics:"]
    lines += table(["metric", *names], [[m, *(_number(f.get(m)) for f in flats)] for m in keys])
    return lines


def _lock(run_dir: Path) -> Lock:
    path = run_dir / LOCK_NAME
    if not path.is_file():
        msg = f"{run_dir}: not a run directory (no {LOCK_NAME})"
        raise UsageError(msg)
    return read_lock(path)


def _lock_or_none(run_dir: Path) -> Lock | None:
    try:
        return read_lock(run_dir / LOCK_NAME)
    except (OSError, LockError):
        return None  # listed all the same, as a run without a readable lock


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    cells = [list(map(str, header)), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
