"""Tests for ptycho_spec.lock: serialization, digests, versions and atomic writes."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
import tomli_w
from strategies import HOST, compile_text, toml

from ptycho_spec.errors import LockError
from ptycho_spec.locate import locate_inputs
from ptycho_spec.lock import (
    FORMAT_REVISION,
    FORMAT_VERSION,
    Lock,
    dumps_lock,
    loads_lock,
    read_lock,
    write_lock,
)
from ptycho_spec.schema import Refine
from ptycho_spec.verify import check_lock, enforce

SPEC = toml({"data": {"source": "simulate", "n_groups": "all"}, "run": {"task": "train"}})
# A train+infer lock of a simulated run, written by ptycho-spec before format revision 1.
REVISION_0 = Path(__file__).parent / "data" / "locks" / "format1-revision0.lock.toml"
# A refined train+infer lock written before format revision 2 (no pinned thread count).
REVISION_1 = Path(__file__).parent / "data" / "locks" / "format1-revision1.lock.toml"


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
        assert list(data["canonical"]) == [
            "data",
            "inference",
            "model",
            "refine",
            "run",
            "seeds",
            "training",
        ]
        assert data["lock"]["format_version"] == FORMAT_VERSION
        assert data["lock"]["format_revision"] == FORMAT_REVISION

    def test_every_field_explicit(self, lock: Lock) -> None:
        """None is written "none"; no field is left out."""
        data = tomllib.loads(dumps_lock(lock))
        assert data["canonical"]["data"]["test_file"] == "none"
        assert data["canonical"]["training"]["momentum"] == "none"

    def test_provenance_inline_tables(self, lock: Lock) -> None:
        """Provenance entries are one-line inline tables."""
        text = dumps_lock(lock)
        assert '"run.task" = { file = "spec.toml", layer = "spec", line = 8 }' in text

    def test_deterministic(self) -> None:
        """The same inputs give byte-identical text."""
        assert dumps_lock(compile_text(SPEC)) == dumps_lock(compile_text(SPEC))


class TestLoadsLock:
    def test_round_trip(self, lock: Lock) -> None:
        """A lock reads back equal to what was written."""
        assert loads_lock(dumps_lock(lock)) == lock

    def test_round_trip_with_refinement(self) -> None:
        """The [refine] table and its seed are written and read back."""
        lock = compile_text(toml({"data": {"source": "simulate"}, "refine": {"iterations": 3}}))
        data = tomllib.loads(dumps_lock(lock))
        assert data["canonical"]["refine"] == {
            "batch_size": 32,
            "iterations": 3,
            "positions": False,
            "probe": False,
        }
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
    from ptycho_spec.lock import DIGESTED_TABLES, UNDIGESTED, _digest

    lock: dict[str, object] = data["lock"]  # type: ignore[assignment]
    header = {k: v for k, v in lock.items() if k not in UNDIGESTED}
    header["tables"] = {t: _digest(data[t]) for t in DIGESTED_TABLES}
    body = {k: v for k, v in data.items() if k != "lock"}
    digest = _digest({**body, "lock": header})
    return {**body, "lock": {**lock, **header, "digest": digest}}


class TestFormatRevisions:
    def test_revision_0_loads_as_it_ran(self) -> None:
        """A lock written before revision 1 reads with no refinement and no patch alignment."""
        lock = read_lock(REVISION_0)
        canonical = lock.resolved.canonical
        assert lock.header.format_revision == 0
        assert canonical.run.task == "train+infer"
        assert canonical.inference.align_patches is False
        assert canonical.refine == Refine(iterations=0)
        assert canonical.seeds.refine == 0

    def test_revision_0_writes_back_unchanged(self) -> None:
        """Written again (run directory, model bundle), it is the same text, so its digest
        still holds and its checkpoints still match it."""
        text = REVISION_0.read_text(encoding="utf-8")
        lock = loads_lock(text)
        assert dumps_lock(lock) == text
        assert lock.validate() == lock
        assert "format_revision" not in text and "align_patches" not in text

    def test_revision_0_verifies(self) -> None:
        """verify finds no data drift and only environment warnings."""
        lock = read_lock(REVISION_0)
        drifts = enforce(
            check_lock(lock, locate_inputs(lock, lock_dir=str(REVISION_0.parent)), HOST)
        )
        assert {d.kind for d in drifts} <= {"environment"}

    def test_revision_1_leaves_threads_to_torch(self) -> None:
        """A lock written before revision 2 reads with no pinned thread count, no
        learning-rate warm-up, uncentred generator inputs and the data's probe (what it ran
        with), keeps its refinement, and writes back as it was."""
        text = REVISION_1.read_text(encoding="utf-8")
        lock = loads_lock(text)
        assert lock.header.format_revision == 1
        assert lock.resolved.execution.cpu_threads is None
        assert lock.resolved.canonical.training.warmup_steps == 0
        assert lock.resolved.canonical.model.center_input is False
        assert lock.resolved.canonical.training.calibrate_probe == 0
        assert lock.resolved.canonical.refine.iterations == 5
        assert dumps_lock(lock) == text and "cpu_threads" not in text

    def test_new_locks_pin_threads(self, lock: Lock) -> None:
        """A spec compiled now locks the host's thread count."""
        assert lock.resolved.execution.cpu_threads == HOST.cpu_threads

    def test_new_locks_align_patches(self, lock: Lock) -> None:
        """A spec compiled now aligns patches unless told otherwise."""
        assert lock.resolved.canonical.inference.align_patches is True

    def test_newer_revision(self, lock: Lock) -> None:
        """A lock of a later revision asks for a newer ptycho-spec."""
        text = _edit(dumps_lock(lock), {"lock.format_revision": FORMAT_REVISION + 1})
        newer = FORMAT_REVISION + 1
        with pytest.raises(LockError, match=rf"format_revision {newer} is newer .* upgrade"):
            loads_lock(text)

    def test_key_of_a_later_revision(self) -> None:
        """A revision 0 lock holding a key of revision 1 is refused, even with a fresh digest:
        writing it back would drop the key."""
        data = tomllib.loads(REVISION_0.read_text(encoding="utf-8"))
        data["canonical"]["inference"]["align_patches"] = True
        with pytest.raises(
            LockError, match=r"canonical.inference.align_patches is not part of format revision 0"
        ):
            Lock.from_dict(_redigest(data))


class TestRenamedValues:
    def test_gpu_reads_as_cuda_and_writes_back_as_written(self, lock: Lock) -> None:
        """A lock an earlier compiler wrote with accelerator "gpu" runs as "cuda", and is
        written back as it was, so its digests hold."""
        data = tomllib.loads(dumps_lock(lock))
        data["execution"]["accelerator"] = "gpu"
        text = tomli_w.dumps(_redigest(data))
        old = loads_lock(text)
        assert old.resolved.execution.accelerator == "cuda"
        assert loads_lock(dumps_lock(old)).header == old.header
        assert tomllib.loads(dumps_lock(old))["execution"]["accelerator"] == "gpu"

    def test_new_locks_hold_one_name(self) -> None:
        """A spec asking for "gpu" compiles to a lock that holds "cuda"."""
        spec = toml(
            {
                "data": {"source": "simulate", "n_groups": "all"},
                "run": {"task": "train"},
                "execution": {"accelerator": "gpu"},
            }
        )
        text = dumps_lock(compile_text(spec))
        assert 'accelerator = "cuda"' in text and '"gpu"' not in text


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
