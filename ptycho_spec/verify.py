"""Is a lock still true of the files it names? Checks run before every run from a lock.

Each check returns the problems it found as sentences; ``verify_inputs`` raises ``LockError``
(exit 3) naming every changed file, so a replay never silently reads other data.
"""

from __future__ import annotations

import os

from ptycho_spec.errors import LockError
from ptycho_spec.facts import file_digest
from ptycho_spec.lock import Lock


def input_problems(lock: Lock) -> list[str]:
    """Data files that are missing or whose size or sha256 differ from the lock."""
    problems = []
    for item in lock.inputs.data:
        if not os.path.isfile(item.path):
            problems.append(f"{item.path} ({item.role}): missing")
            continue
        sha, size = file_digest(item.path)
        if (sha, size) != (item.sha256, item.size):
            problems.append(
                f"{item.path} ({item.role}): locked {item.sha256[:19]}… {item.size} B, "
                f"now {sha[:19]}… {size} B"
            )
    return problems


def verify_inputs(lock: Lock) -> None:
    problems = input_problems(lock)
    if problems:
        msg = "data changed since the lock was written: " + "; ".join(problems)
        raise LockError(msg)
