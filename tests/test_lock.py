"""Tests for ptycho_spec.lock: serialization, digests, versions and atomic writes."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
import tomli_w
from strategies import compile_text, toml

from ptycho_spec.errors import LockError
from ptycho_spec.lock import FORMAT_VERSION, Lock, dumps_lock, loads_lock, read_lock, write_lock

SPEC = toml({"data": {"source": "simulate", "n_groups": "all"}, "run": {"task": "train"}})


@pytest.fixture
def lock() -> Lock:
    return compile_text(SPEC)


def _edit(text: str, change: dict[str, object]) -> str:
    data = tomllib.loads(text)
    for dotted, value in change.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return tomli_w.dumps(data)


class TestDumpsLock:
    def test_tables(self, lock: Lock) -> None:
        """The lock holds the documented top-level tables, keys sorted."""
        data = tomllib.loads(dumps_lock(lock))
        assert list(data) == [
            "canonical",
            "environment",
            "execution",
            "inputs",
            "lock",
            "provenance",
        ]
        assert list(data["canonical"]) == ["data", "inference", "model", "run", "seeds", "training"]
        assert data["lock"]["format_version"] == FORMAT_VERSION

    def test_every_field_explicit(self, lock: Lock) -> None:
        """None is written "none"; no field is left out."""
        data = tomllib.loads(dumps_lock(lock))
        assert data["canonical"]["data"]["test_file"] == "none"
        assert data["canonical"]["training"]["momentum"] == "none"

    def test_provenance_inline_tables(self, lock: Lock) -> None:
        """Provenance entries are one-line inline tables."""
        text = dumps_lock(lock)
        assert (
            '"run.task" = { file = "/virtual/specs/spec.toml", layer = "spec", line = 8 }' in text
        )

    def test_deterministic(self) -> None:
        """The same inputs give byte-identical text."""
        assert dumps_lock(compile_text(SPEC)) == dumps_lock(compile_text(SPEC))


class TestLoadsLock:
    def test_round_trip(self, lock: Lock) -> None:
        """A lock reads back equal to what was written."""
        assert loads_lock(dumps_lock(lock)) == lock

    def test_validate(self, lock: Lock) -> None:
        """validate() is the dict round trip."""
        assert lock.validate() == lock

    def test_edit_names_the_table(self, lock: Lock) -> None:
        """An edited value fails the digest check, naming the changed table."""
        text = _edit(dumps_lock(lock), {"canonical.training.nepochs": 99})
        with pytest.raises(
            LockError, match=r"edited after it was written; changed: \[canonical\]; recompile"
        ) as caught:
            loads_lock(text)
        assert caught.value.exit_code == 3

    def test_whitespace_is_not_an_edit(self, lock: Lock) -> None:
        """The digest covers values, not formatting."""
        text = dumps_lock(lock).replace("[execution]\n", "# a comment\n[execution]\n")
        assert loads_lock(text) == lock

    def test_other_format_version(self, lock: Lock) -> None:
        """A lock of another format version names the supported one."""
        text = _edit(dumps_lock(lock), {"lock.format_version": 2})
        with pytest.raises(
            LockError, match=r"format_version 2 is not supported; .* reads format_version 1"
        ):
            loads_lock(text)

    def test_not_a_lock(self) -> None:
        """A TOML file without [lock] is refused."""
        with pytest.raises(LockError, match="not a ptycho-spec lock"):
            loads_lock("a = 1\n")

    def test_syntax_error(self) -> None:
        """Broken TOML is a lock error with a line."""
        with pytest.raises(LockError, match=r"x.lock:2: not valid TOML"):
            loads_lock("a = 1\nb = \n", source="x.lock")

    def test_unresolved_auto(self, lock: Lock) -> None:
        """A lock may not hold "auto" where the compiler resolves it, even with a fresh digest."""
        data = lock.to_dict()
        data["canonical"]["model"]["N"] = "auto"
        fixed = _redigest(data)
        with pytest.raises(LockError, match=r'unresolved "auto" in canonical.model.N'):
            Lock.from_dict(fixed)

    def test_wrong_type(self, lock: Lock) -> None:
        """A structurally wrong lock is refused with the path."""
        data = lock.to_dict()
        data["execution"]["devices"] = "two"
        with pytest.raises(LockError, match="invalid lock"):
            Lock.from_dict(_redigest(data))


def _redigest(data: dict[str, object]) -> dict[str, object]:
    """Recompute the digests of an edited lock dict (to reach the checks after the digest)."""
    from ptycho_spec.lock import DIGESTED_TABLES, _digest

    header = dict(data["lock"])  # type: ignore[arg-type]
    header["tables"] = {t: _digest(data[t]) for t in DIGESTED_TABLES}
    header.pop("digest")
    body = {k: v for k, v in data.items() if k != "lock"}
    header["digest"] = _digest({**body, "lock": header})
    return {**body, "lock": header}


class TestWriteLock:
    def test_atomic_write_and_read(self, lock: Lock, tmp_path: Path) -> None:
        """write_lock leaves only the lock file behind, and read_lock reads it back."""
        path = tmp_path / "x.lock.toml"
        write_lock(lock, path)
        assert os.listdir(tmp_path) == ["x.lock.toml"]
        assert read_lock(path) == lock

    def test_replaces_an_existing_file(self, lock: Lock, tmp_path: Path) -> None:
        """An existing lock is replaced in one step."""
        path = tmp_path / "x.lock.toml"
        path.write_text("old")
        write_lock(lock, path)
        assert path.read_text() == dumps_lock(lock)
