"""Checkpoint files: written atomically, read as untrusted input.

Lightning's ``TorchCheckpointIO`` saves through an fsspec transaction that stages the file in
the system temp folder and then *moves* it into place: across file systems that move is a
copy, so a job killed mid-copy leaves a truncated checkpoint (and nothing is fsynced). Here the
bytes go to a temporary file beside the target and are renamed into place
(``ptycho_spec.atomic``).

Reading uses ``torch.load(weights_only=True)`` only, so a hostile file cannot run code, and a
checkpoint must carry the digest of the lock it was written under before Lightning restores
anything from it: resuming another run's checkpoint would silently mix two runs.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import IO, Any, Final

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ptycho_spec import atomic
from ptycho_spec.errors import DataError

LOCK_KEY: Final = "ptycho_spec_lock"  # checkpoint entry: digest of the lock of the run
_LIGHTNING_KEYS: Final = ("state_dict", "loops", "callbacks", "optimizer_states", "global_step")
# What torch.load(weights_only=True) raises on truncated, corrupted or foreign bytes (found by
# mutating valid files): pickle and zip-reader errors, and lookups of broken records.
_UNREADABLE: Final = (
    pickle.UnpicklingError,
    RuntimeError,
    ValueError,
    EOFError,
    LookupError,
    TypeError,
    AttributeError,
    OverflowError,
    struct.error,
)


def load_untrusted(source: Path | IO[bytes], *, path: Path, key: str | None = None) -> Any:
    """``torch.load`` restricted to tensors and plain containers; ``DataError`` (exit 4) for
    anything else, naming ``path`` (and ``key``, the member of a bundle)."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        msg = "no such file"
        raise DataError(msg, path=str(path), key=key) from None
    except _UNREADABLE as exc:
        msg = f"unreadable or not a torch file of tensors ({type(exc).__name__})"
        raise DataError(msg, path=str(path), key=key) from None


def read_checkpoint(path: Path, *, lock_digest: str | None) -> dict[str, Any]:
    """A Lightning checkpoint written by the run of ``lock_digest`` (any run when ``None``)."""
    checkpoint = load_untrusted(path, path=path)
    if not isinstance(checkpoint, dict) or not all(k in checkpoint for k in _LIGHTNING_KEYS):
        msg = "not a Lightning training checkpoint"
        raise DataError(msg, path=str(path))
    written_by = checkpoint.get(LOCK_KEY)
    if not isinstance(written_by, str):
        msg = "not a checkpoint of a ptycho-spec run (it names no lock)"
        raise DataError(msg, path=str(path))
    if lock_digest is not None and written_by != lock_digest:
        msg = f"written by another run (lock {written_by}), not by this lock ({lock_digest})"
        raise DataError(msg, path=str(path))
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made atomic on save and safe on load (see the module doc)."""

    def __init__(self, *, lock_digest: str | None = None) -> None:
        super().__init__()
        self.lock_digest = lock_digest

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        buffer = io.BytesIO()
        torch.save({**checkpoint, LOCK_KEY: self.lock_digest or "none"}, buffer)
        atomic.write_bytes(path, buffer.getvalue())

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return read_checkpoint(Path(path), lock_digest=self.lock_digest)
