"""The study directory and its lock, ``study.lock.toml``: every point's overrides and the
digests of its lock.

Layout of a study directory ``DIR``:

* ``study.lock.toml``: the points, written after every point's lock;
* ``locks/<id>.lock.toml``: each point's lock, compiled before any point runs;
* ``points/<id>/``: each point's run directory (``specs/run-directory.md``);
* ``logs/<id>.log``: what each point's run printed (local launcher); ``slurm/``: submitit's
  files (slurm launcher);
* ``summary.csv``, ``summary.md``, ``summary.png``: written when the study has run.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import tomli_w
from attrs import frozen

from ptycho_spec import __version__, atomic
from ptycho_spec.errors import UsageError
from ptycho_spec.lock import write_lock
from ptycho_spec.study.compile import CompiledPoint
from ptycho_spec.study.spec import Study

STUDY_LOCK: Final = "study.lock.toml"
FORMAT_VERSION: Final = 1


@frozen(kw_only=True)
class LockedPoint:
    """One point as the study lock lists it."""

    id: str
    overrides: Mapping[str, Any]
    lock_digest: str
    run_digest: str


@frozen(kw_only=True)
class StudyLock:
    """A compiled study: its file, the keys it varies and its points, in order."""

    study: str  # the study file's absolute path
    varied: tuple[str, ...]
    points: tuple[LockedPoint, ...]


def lock_file(out_dir: Path, point_id: str) -> Path:
    return out_dir / "locks" / f"{point_id}.lock.toml"


def point_dir(out_dir: Path, point_id: str) -> Path:
    return out_dir / "points" / point_id


def log_file(out_dir: Path, point_id: str) -> Path:
    return out_dir / "logs" / f"{point_id}.log"


def make_study_lock(study: Study, compiled: Sequence[CompiledPoint]) -> StudyLock:
    return StudyLock(
        study=str(Path(study.source).resolve()),
        varied=study.varied,
        points=tuple(
            LockedPoint(
                id=c.point.id,
                overrides=dict(c.point.overrides),
                lock_digest=c.lock.header.digest,
                run_digest=c.lock.header.run_digest,
            )
            for c in compiled
        ),
    )


def dumps_study_lock(lock: StudyLock) -> str:
    data = {
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "study": lock.study,
        "varied": list(lock.varied),
        "points": [
            {
                "id": p.id,
                "lock": lock_file(Path(), p.id).as_posix(),
                "lock_digest": p.lock_digest,
                "run_digest": p.run_digest,
                "overrides": dict(p.overrides),
            }
            for p in lock.points
        ],
    }
    return tomli_w.dumps(data)


def loads_study_lock(text: str, *, source: str) -> StudyLock:
    """A study lock's text; ``UsageError`` names the file when it is not one."""
    try:
        data = tomllib.loads(text)
        if data["format_version"] != FORMAT_VERSION:
            msg = f"{source}: study lock format_version {data['format_version']} is not {FORMAT_VERSION}"
            raise UsageError(msg)
        points = tuple(
            LockedPoint(
                id=p["id"],
                overrides=p["overrides"],
                lock_digest=p["lock_digest"],
                run_digest=p["run_digest"],
            )
            for p in data["points"]
        )
        return StudyLock(study=data["study"], varied=tuple(data["varied"]), points=points)
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        msg = f"{source}: not a study lock ({type(exc).__name__}: {exc})"
        raise UsageError(msg) from None


def read_study_lock(out_dir: Path) -> StudyLock:
    path = out_dir / STUDY_LOCK
    return loads_study_lock(path.read_text(encoding="utf-8"), source=str(path))


def write_study(out_dir: Path, study: Study, compiled: Sequence[CompiledPoint]) -> StudyLock:
    """Every point's lock, then the study lock naming them (each file written atomically)."""
    for c in compiled:
        write_lock(c.lock, lock_file(out_dir, c.point.id))
    lock = make_study_lock(study, compiled)
    atomic.write_text(out_dir / STUDY_LOCK, dumps_study_lock(lock))
    return lock
