"""The run directory: claimed by one live process, marked complete only at the very end.

``.ptycho-run.pid`` holds the pid of the process writing the directory, and that process holds
an exclusive ``flock`` on it: the kernel releases the lock when the holder exits, however it
dies, so a claim left by a killed run is free to take (no pid guessing, no pid reuse). A
directory with a live claim is refused; ``COMPLETE`` is written last (atomically) with the
lock's digest, and a complete directory is refused unless forced, forcing removing the previous
run's outputs first so nothing stale survives next to the new ones. Claiming also removes the
temporary files of atomic writes that a killed process left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ptycho_spec import atomic
from ptycho_spec.errors import RunError, UsageError

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
    "timing.toml",
    "data-drift.toml",
    "environment-drift.toml",
    COMPLETE,
)
CHECKPOINT_DIR = "checkpoints"
OUTPUT_DIRS = (CHECKPOINT_DIR, "logs", "mlruns")


def holder(out_dir: Path) -> int | None:
    """The pid of the live process holding ``out_dir``, this one included (0 if it has not
    written its pid yet), or None."""
    try:
        fd = os.open(out_dir / CLAIM, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid(fd)
    finally:
        os.close(fd)  # also releases the probe's shared lock
    return None


def check_free(out_dir: Path) -> None:
    """``RunError`` if a live process holds ``out_dir``."""
    pid = holder(out_dir)
    if pid is not None:
        raise _in_use(out_dir, pid)


def _in_use(out_dir: Path, pid: int) -> RunError:
    who = f"process {pid}" if pid else "another process"
    return RunError(f"{out_dir}: run directory is in use by {who}; wait for it or choose --out")


def _pid(fd: int) -> int:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else 0


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
    out_dir.mkdir(parents=True, exist_ok=True)
    with _hold(out_dir / CLAIM):
        if is_complete(out_dir) and not force:
            msg = f"{out_dir}: holds a completed run; pass --force to overwrite it or choose --out"
            raise UsageError(msg)
        _remove_stale_temporaries(out_dir)
        if not resume:
            clear_outputs(out_dir)
        yield out_dir


@contextlib.contextmanager
def _hold(path: Path) -> Iterator[None]:
    fd = _lock(path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _lock(path: Path) -> int:
    """A descriptor of ``path`` holding its exclusive lock; ``RunError`` if a live process has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid(fd)
            os.close(fd)
            raise _in_use(path.parent, pid) from None
        # A finishing holder unlinks the file: a lock on that unlinked inode would exclude no
        # one, so take the lock again on whatever file is at ``path`` now.
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of atomic writes (``.NAME.XXXX.tmp``) left by a killed process: once the
    directory is claimed, no live process owns them."""
    for folder in (out_dir, out_dir / CHECKPOINT_DIR):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def mark_complete(out_dir: Path, *, digest: str) -> None:
    atomic.write_text(out_dir / COMPLETE, json.dumps({"lock_digest": digest}) + "\n")
