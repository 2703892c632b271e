"""Where a lock's files are: how the compiler names them, and how a lock finds them again.

A lock names each file relative to the project, the folder of the spec it was compiled from,
when the file sits below it, and by its absolute path otherwise; it pins every data file by
sha256 and size. So the lock's digest does not depend on where the project or the data live,
and a lock handed on with its data replays wherever it lands. A data file is found
(:func:`locate_inputs`) at the first of these places that holds the locked content:

1. its recorded path: as written when absolute, else against the lock's folder, then against
   the project the lock was compiled in (``[lock] project_dir``, a hint outside the digest);
2. each data folder (``--data-dir``, then ``PTYCHO_DATA_DIRS``), by file name.

Nothing here imports torch: ``verify`` and ``compile`` use it on a login node.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Final

from attrs import frozen

from ptycho_spec.facts import file_digest
from ptycho_spec.lock import DataInput, Lock

DATA_DIRS_VARIABLE: Final = "PTYCHO_DATA_DIRS"


def recorded_path(path: str, project_dir: str) -> str:
    """How a lock names the file at absolute ``path``: relative to ``project_dir`` (with ``/``)
    when the file sits below it, else absolute."""
    path, project_dir = os.path.normpath(path), os.path.normpath(project_dir)
    if os.path.commonpath([path, project_dir]) != project_dir or path == project_dir:
        return path
    return PurePath(os.path.relpath(path, project_dir)).as_posix()


@frozen(kw_only=True)
class Located:
    """Where a data file of a lock was found.

    ``path`` is the first place holding the locked sha256 and size; failing that, the first
    place holding a file of that name at all (its content differs: data drift), or None when
    no place holds one. ``content`` is that file's sha256 and size; ``tried``, every place
    looked at, in order.
    """

    input: DataInput
    path: str | None
    content: tuple[str, int] | None
    tried: tuple[str, ...]

    @property
    def intact(self) -> bool:
        return self.content == (self.input.sha256, self.input.size)


def locate_inputs(
    lock: Lock, *, lock_dir: str, data_dirs: Sequence[str] = ()
) -> tuple[Located, ...]:
    """Find every data file of ``lock``, read from ``lock_dir``, by the rule of the module doc."""
    return tuple(
        _locate(item, _places(item.path, lock, lock_dir, data_dirs)) for item in lock.inputs.data
    )


def compiled_paths(lock: Lock) -> dict[str, str]:
    """Role → file, for a lock compiled in this process: its recorded paths in the project it
    names. The compiler has just hashed these very files, so they are not hashed again."""
    return {
        item.role: _places(item.path, lock, lock.header.project_dir or "", ())[0]
        for item in lock.inputs.data
    }


def _places(path: str, lock: Lock, lock_dir: str, data_dirs: Sequence[str]) -> list[str]:
    folders = [lock_dir, lock.header.project_dir] if not os.path.isabs(path) else [""]
    places = [os.path.join(os.path.abspath(f), path) for f in folders if f is not None]
    places += [os.path.join(os.path.abspath(d), PurePath(path).name) for d in data_dirs]
    return list(dict.fromkeys(os.path.normpath(p) for p in places))


def _locate(item: DataInput, places: Sequence[str]) -> Located:
    existing = [p for p in places if os.path.isfile(p)]
    hashed: dict[str, tuple[str, int]] = {}  # a data file may be gigabytes: hash it once
    for place in existing:
        if os.path.getsize(place) == item.size:
            hashed[place] = file_digest(place)
            if hashed[place] == (item.sha256, item.size):
                return Located(input=item, path=place, content=hashed[place], tried=tuple(places))
    if not existing:
        return Located(input=item, path=None, content=None, tried=tuple(places))
    first = existing[0]
    content = hashed.get(first) or file_digest(first)
    return Located(input=item, path=first, content=content, tried=tuple(places))


def data_dirs(flags: Sequence[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The data folders to search: ``--data-dir`` flags first, then ``PTYCHO_DATA_DIRS``
    (``os.pathsep``-separated)."""
    listed = environ.get(DATA_DIRS_VARIABLE, "").split(os.pathsep)
    return (*flags, *(d for d in listed if d))


def paths_of(located: Sequence[Located]) -> dict[str, str]:
    """Role → the file the run reads (the runner's ``paths``); files not found are left out."""
    return {x.input.role: x.path for x in located if x.path is not None}
