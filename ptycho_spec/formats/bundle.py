"""The model bundle container, written once and torch-free: one zip holding the weights, the
lock they were trained from, and the normalization constants.

Members, always in this order and byte-reproducible (fixed timestamps and permissions, stored
uncompressed), so the bundle's sha256 identifies the trained model:

* ``manifest.toml`` — format version, architecture summary, scaling constants, and the sha256
  and size of the other members;
* ``lock.toml`` — the training lock, verified like any lock when the bundle is read;
* ``state_dict.pt`` — the module's ``state_dict`` as ``torch.save`` bytes.

A bundle is untrusted input: member names and sizes are checked before anything is read, every
member must match the manifest's sha256, and the embedded lock must pass every check of a lock
file. The compiler (``facts.read_bundle``) and the runner (``runner.train.bundle``) both read
through :func:`read_bundle_file`, so ``compile`` refuses what ``run`` would; the runner alone
turns the weights into tensors (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile
from pathlib import Path
from typing import Any, Final

import tomli_w
from attrs import frozen

from ptycho_spec.errors import DataError, LockError
from ptycho_spec.formats.npz import ZIP_ERRORS
from ptycho_spec.lock import Lock, loads_lock
from ptycho_spec.toml_lines import parse_toml

FORMAT: Final = "ptycho-spec-bundle"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.toml"
LOCK: Final = "lock.toml"
WEIGHTS: Final = "state_dict.pt"
MEMBERS: Final = (MANIFEST, LOCK, WEIGHTS)
MAX_TEXT_BYTES: Final = 4 << 20  # a lock or manifest is a few kB; refuse zip bombs
MAX_WEIGHTS_BYTES: Final = 8 << 30
_ZIP_EPOCH: Final = (1980, 1, 1, 0, 0, 0)


@frozen(kw_only=True)
class BundleFile:
    """A checked bundle: its manifest, its lock (parsed and verified) and text, and the
    weights' bytes, which only the runner deserializes."""

    path: str
    manifest: dict[str, Any]
    lock: Lock
    lock_text: str
    weights: bytes


def dumps_bundle_file(
    *,
    weights: bytes,
    lock_text: str,
    scaling: dict[str, float],
    model: dict[str, Any],
    tool_version: str,
) -> bytes:
    """The zip bytes of a bundle; the same arguments always give the same bytes."""
    payload = {LOCK: lock_text.encode(), WEIGHTS: weights}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": tool_version,
        "model": model,
        "scaling": scaling,
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in payload.items()
        },
    }
    members = {MANIFEST: tomli_w.dumps(manifest).encode(), **payload}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in MEMBERS:
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.create_system = 3  # Unix: the same bytes on every platform
            zf.writestr(info, members[name])
    return out.getvalue()


def read_bundle_file(path: str | Path) -> BundleFile:
    """Read and check a bundle; anything that is not one of ours raises ``DataError``."""
    path = str(path)
    members = _read_members(path)
    manifest = _parse_manifest(path, members[MANIFEST])
    for name in MEMBERS[1:]:
        expected = manifest["members"].get(name, {})
        if hashlib.sha256(members[name]).hexdigest() != expected.get("sha256"):
            msg = "member does not match the manifest's sha256"
            raise DataError(msg, path=path, key=name)
    try:
        lock_text = members[LOCK].decode()
    except UnicodeDecodeError as exc:
        msg = "lock.toml is not UTF-8 text"
        raise DataError(msg, path=path, key=LOCK) from exc
    return BundleFile(
        path=path,
        manifest=manifest,
        lock=_parse_lock(path, lock_text),
        lock_text=lock_text,
        weights=members[WEIGHTS],
    )


def _read_members(path: str) -> dict[str, bytes]:
    """The bundle's members, after checking names and declared sizes before extraction."""
    if not Path(path).is_file():
        msg = "no such bundle file"
        raise DataError(msg, path=path)
    if not zipfile.is_zipfile(path):
        msg = "not a model bundle (not a zip file)"
        raise DataError(msg, path=path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_names(path, [i.filename for i in infos])
            for info in infos:
                limit = MAX_WEIGHTS_BYTES if info.filename == WEIGHTS else MAX_TEXT_BYTES
                if info.file_size > limit:
                    msg = f"member larger than {limit} bytes"
                    raise DataError(msg, path=path, key=info.filename)
            return {info.filename: zf.read(info) for info in infos}
    except ZIP_ERRORS as exc:
        msg = f"corrupted bundle ({exc})"
        raise DataError(msg, path=path) from exc


def _check_names(path: str, names: list[str]) -> None:
    for name in names:
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name:
            msg = "unsafe member name in bundle"
            raise DataError(msg, path=path, key=name)
    if sorted(names) != sorted(MEMBERS):
        hint = " (a PtychoPINN wts.h5.zip?)" if "manifest.dill" in names else ""
        missing = [m for m in MEMBERS if m not in names]
        lacks = f"; no {', '.join(missing)}" if missing else ""
        msg = (
            f"not a ptycho-spec model bundle{hint}: members {sorted(names)}, "
            f"expected {list(MEMBERS)}{lacks}"
        )
        raise DataError(msg, path=path)


def _parse_manifest(path: str, data: bytes) -> dict[str, Any]:
    try:
        manifest = parse_toml(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        msg = f"unreadable manifest ({exc})"
        raise DataError(msg, path=path, key=MANIFEST) from exc
    if manifest.get("format") != FORMAT:
        msg = "not a ptycho-spec model bundle"
        raise DataError(msg, path=path, key=MANIFEST)
    if manifest.get("format_version") != FORMAT_VERSION:
        msg = (
            f"bundle format_version {manifest.get('format_version')!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
        raise DataError(msg, path=path, key=MANIFEST)
    for key in ("members", "scaling", "model"):
        if not isinstance(manifest.get(key), dict):
            msg = f"manifest lacks the [{key}] table"
            raise DataError(msg, path=path, key=MANIFEST)
    return manifest


def _parse_lock(path: str, text: str) -> Lock:
    """The embedded lock, which passes every check of a lock file (version, digest, fields):
    an edited lock would misstate what the weights were trained from."""
    try:
        return loads_lock(text, source=f"{path}[{LOCK}]")
    except LockError as exc:
        msg = f"its lock is invalid: {exc}"
        raise DataError(msg, path=path, key=LOCK) from None
