"""The model bundle as the runner holds it: weights as tensors, the lock text they were trained
from, and the normalization constants.

The container (members, limits, manifest hashes, the embedded lock) is
``ptycho_spec.formats.bundle``, shared with the compiler; here the weights become
``torch.save`` bytes and back, the latter only through ``torch.load(weights_only=True)``, so a
hostile file cannot run code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from attrs import frozen

from ptycho_spec import atomic
from ptycho_spec.errors import DataError
from ptycho_spec.formats.bundle import MEMBERS, WEIGHTS, dumps_bundle_file, read_bundle_file
from runner.train.checkpoints import load_untrusted

__all__ = ["MEMBERS", "Bundle", "dumps_bundle", "read_bundle", "write_bundle"]


@frozen(kw_only=True)
class Bundle:
    """A trained model: its weights, the lock text it was trained from, and its constants."""

    state_dict: dict[str, torch.Tensor]
    lock_text: str
    scaling: dict[str, float]
    model: dict[str, Any]


def dumps_bundle(bundle: Bundle, *, tool_version: str) -> bytes:
    """Serialize ``bundle`` to zip bytes; the same bundle always gives the same bytes."""
    weights = io.BytesIO()
    torch.save(bundle.state_dict, weights)
    return dumps_bundle_file(
        weights=weights.getvalue(),
        lock_text=bundle.lock_text,
        scaling=bundle.scaling,
        model=bundle.model,
        tool_version=tool_version,
    )


def write_bundle(path: Path, bundle: Bundle, *, tool_version: str) -> None:
    atomic.write_bytes(path, dumps_bundle(bundle, tool_version=tool_version))


def read_bundle(path: Path) -> Bundle:
    """Read and check a bundle; anything that is not one of ours raises ``DataError``."""
    checked = read_bundle_file(path)
    return Bundle(
        state_dict=_load_weights(path, checked.weights),
        lock_text=checked.lock_text,
        scaling={k: float(v) for k, v in checked.manifest["scaling"].items()},
        model=dict(checked.manifest["model"]),
    )


def _load_weights(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    state = load_untrusted(io.BytesIO(data), path=path, key=WEIGHTS)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = "weights are not a state_dict of tensors"
        raise DataError(msg, path=str(path), key=WEIGHTS)
    return state
