"""The run directory: claimed by one live process, marked complete only at the very end.

``.ptycho-run.pid`` holds the pid of the process writing the directory; ``COMPLETE`` is written
last (atomically) with the lock's digest. A directory with a live claim is refused; a complete
one is refused unless forced, and forcing removes the previous run's outputs first so nothing
stale survives next to the new ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ptycho_spec.errors import RunError, UsageError
from runner.job import atomic

CLAIM = ".ptycho-run.pid"
COMPLETE = "COMPLETE"
OUTPUTS = (
    "run.lock.toml",
    "effective.toml",
    "model.bundle",
    "reconstruction.npz",
    "reconstruction.h5",
    "amplitude.png",
    "phase.png",
    "loss.png",
    "metrics.json",
    "data-drift.toml",
    "environment-drift.toml",
    COMPLETE,
)
OUTPUT_DIRS = ("checkpoints", "logs", "mlruns")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(out_dir: Path) -> int | None:
    """The pid of a live process holding ``out_dir``, if any (stale claims are ignored)."""
    try:
        pid = int((out_dir / CLAIM).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid != os.getpid() and _alive(pid) else None


def is_complete(out_dir: Path) -> bool:
    return (out_dir / COMPLETE).is_file()


def clear_outputs(out_dir: Path) -> None:
    for name in OUTPUTS:
        (out_dir / name).unlink(missing_ok=True)
    for name in OUTPUT_DIRS:
        shutil.rmtree(out_dir / name, ignore_errors=True)


@contextlib.contextmanager
def claim(out_dir: Path, *, force: bool, resume: bool = False) -> Iterator[Path]:
    """Hold ``out_dir`` for this process for the duration of the block."""
    pid = holder(out_dir)
    if pid is not None:
        msg = f"{out_dir}: run directory is in use by process {pid}; wait for it or choose --out"
        raise RunError(msg)
    if is_complete(out_dir) and not force:
        msg = f"{out_dir}: holds a completed run; pass --force to overwrite it or choose --out"
        raise UsageError(msg)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        clear_outputs(out_dir)
    atomic.write_text(out_dir / CLAIM, f"{os.getpid()}\n")
    try:
        yield out_dir
    finally:
        (out_dir / CLAIM).unlink(missing_ok=True)


def mark_complete(out_dir: Path, *, digest: str) -> None:
    atomic.write_text(out_dir / COMPLETE, json.dumps({"lock_digest": digest}) + "\n")
