"""The model bundle: one zip holding the weights, the lock they were trained from, and the
normalization constants.

Members, always in this order and byte-reproducible (fixed timestamps and permissions, stored
uncompressed), so the bundle's sha256 identifies the trained model:

* ``manifest.toml`` — format version, architecture summary, scaling constants, and the sha256
  and size of the other members;
* ``lock.toml`` — the training lock, verified like any lock when the bundle is read;
* ``state_dict.pt`` — the module's ``state_dict``, loaded with ``weights_only=True``.

A bundle is untrusted input: member names and sizes are checked before anything is read, and
only ``torch.load(weights_only=True)`` touches the weights, so a hostile file cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import tomli_w
import torch
from attrs import frozen

from ptycho_spec import atomic
from ptycho_spec.errors import DataError, LockError
from ptycho_spec.facts import ZIP_ERRORS
from ptycho_spec.lock import loads_lock
from ptycho_spec.toml_lines import parse_toml
from runner.train.checkpoints import load_untrusted

FORMAT = "ptycho-spec-bundle"
FORMAT_VERSION = 1
MEMBERS = ("manifest.toml", "lock.toml", "state_dict.pt")
_MAX_TEXT_BYTES = 4 << 20
_MAX_WEIGHTS_BYTES = 8 << 30
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


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
    payload = {"lock.toml": bundle.lock_text.encode(), "state_dict.pt": weights.getvalue()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": tool_version,
        "model": bundle.model,
        "scaling": bundle.scaling,
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in payload.items()
        },
    }
    members = {"manifest.toml": tomli_w.dumps(manifest).encode(), **payload}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in MEMBERS:
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix: the same bytes on every platform
            zf.writestr(info, members[name])
    return out.getvalue()


def write_bundle(path: Path, bundle: Bundle, *, tool_version: str) -> None:
    atomic.write_bytes(path, dumps_bundle(bundle, tool_version=tool_version))


def read_bundle(path: Path) -> Bundle:
    """Read and check a bundle; anything that is not one of ours raises ``DataError``."""
    members = _read_members(path)
    manifest = _parse_manifest(path, members["manifest.toml"])
    for name in MEMBERS[1:]:
        expected = manifest["members"].get(name, {})
        if hashlib.sha256(members[name]).hexdigest() != expected.get("sha256"):
            msg = "member does not match the manifest's sha256"
            raise DataError(msg, path=str(path), key=name)
    try:
        lock_text = members["lock.toml"].decode()
    except UnicodeDecodeError as exc:
        msg = "lock.toml is not UTF-8 text"
        raise DataError(msg, path=str(path), key="lock.toml") from exc
    _check_lock(path, lock_text)
    return Bundle(
        state_dict=_load_weights(path, members["state_dict.pt"]),
        lock_text=lock_text,
        scaling={k: float(v) for k, v in manifest["scaling"].items()},
        model=dict(manifest["model"]),
    )


def _read_members(path: Path) -> dict[str, bytes]:
    """The bundle's members, after checking names and declared sizes before extraction."""
    if not path.is_file():
        msg = "no such bundle file"
        raise DataError(msg, path=str(path))
    if not zipfile.is_zipfile(path):
        msg = "not a model bundle (not a zip file)"
        raise DataError(msg, path=str(path))
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_names(path, [i.filename for i in infos])
            for info in infos:
                limit = _MAX_WEIGHTS_BYTES if info.filename == "state_dict.pt" else _MAX_TEXT_BYTES
                if info.file_size > limit:
                    msg = f"member larger than {limit} bytes"
                    raise DataError(msg, path=str(path), key=info.filename)
            return {info.filename: zf.read(info) for info in infos}
    except ZIP_ERRORS as exc:
        msg = f"corrupted bundle ({exc})"
        raise DataError(msg, path=str(path)) from exc


def _check_names(path: Path, names: list[str]) -> None:
    for name in names:
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name:
            msg = "unsafe member name in bundle"
            raise DataError(msg, path=str(path), key=name)
    if sorted(names) != sorted(MEMBERS):
        hint = " (a PtychoPINN wts.h5.zip?)" if "manifest.dill" in names else ""
        msg = f"not a ptycho-spec model bundle{hint}: members {sorted(names)}, expected {list(MEMBERS)}"
        raise DataError(
            msg,
            path=str(path),
        )


def _parse_manifest(path: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = parse_toml(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"unreadable manifest ({exc})"
        raise DataError(msg, path=str(path), key="manifest.toml") from exc
    if manifest.get("format") != FORMAT:
        msg = "not a ptycho-spec model bundle"
        raise DataError(msg, path=str(path), key="manifest.toml")
    if manifest.get("format_version") != FORMAT_VERSION:
        msg = (
            f"bundle format_version {manifest.get('format_version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
        raise DataError(msg, path=str(path), key="manifest.toml")
    for key in ("members", "scaling", "model"):
        if not isinstance(manifest.get(key), dict):
            msg = f"manifest lacks the [{key}] table"
            raise DataError(msg, path=str(path), key="manifest.toml")
    return manifest


def _check_lock(path: Path, text: str) -> None:
    """The embedded lock passes every check of a lock file (version, digest, fields): an
    edited lock would misstate what the weights were trained from."""
    try:
        loads_lock(text, source=f"{path}[lock.toml]")
    except LockError as exc:
        msg = f"its lock is invalid: {exc}"
        raise DataError(msg, path=str(path), key="lock.toml") from None


def _load_weights(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    state = load_untrusted(io.BytesIO(data), path=path, key="state_dict.pt")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = "weights are not a state_dict of tensors"
        raise DataError(msg, path=str(path), key="state_dict.pt")
    return state
