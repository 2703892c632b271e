"""Lock verification: ``ptycho-spec verify``, and ``run LOCK`` with ``--strict`` and
``--allow-drift data`` (the rules of specs/lockfile-v1.md, "Verification")."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import attrs
import numpy as np
import pytest
from replay_kit import run_lock

from ptycho_spec.cli import main
from ptycho_spec.compile import compile_layers
from ptycho_spec.errors import LockError
from ptycho_spec.facts import read_host
from ptycho_spec.load import load_layers
from ptycho_spec.lock import read_lock, write_lock
from ptycho_spec.verify import Drift, drift_records, enforce

NPZ_SPEC = """\
spec_version = 1
[run]
task = "train+infer"
seed = 5
[data]
source = "npz"
train_file = "train.npz"
test_fraction = 0.25
n_groups = "all"
[model]
n_filters_scale = 1
[training]
nepochs = 1
batch_size = 4
[execution]
accelerator = "cpu"
enable_progress_bar = false
"""


def write_scan(path: Path, *, patterns: int = 16, gain: float = 1.0) -> None:
    """A small scan in the NPZ contract: a 4 × 4 raster under a disk probe (N = 64)."""
    yy, xx = np.mgrid[:64, :64] - 31.5
    probe = (np.hypot(xx, yy) < 16).astype(np.complex64)
    amplitude = np.random.default_rng(0).random((patterns, 64, 64)).astype(np.float32)
    xs = 40.0 + 8.0 * (np.arange(patterns) % 4)
    np.savez(
        path,
        diff3d=amplitude * np.float32(gain),
        xcoords=xs,
        ycoords=40.0 + 8.0 * (np.arange(patterns) // 4),
        probeGuess=probe,
    )


@pytest.fixture
def npz_lock(tmp_path: Path) -> Path:
    """A lock compiled from an NPZ scan in ``tmp_path``."""
    write_scan(tmp_path / "train.npz")
    (tmp_path / "spec.toml").write_text(NPZ_SPEC)
    lock = tmp_path / "spec.lock.toml"
    assert main(["compile", str(tmp_path / "spec.toml"), "-o", str(lock)]) == 0
    return lock


def lock_compiled_elsewhere(tmp_path: Path, sets: tuple[str, ...] = (), **host: object) -> Path:
    """The NPZ spec of ``tmp_path`` (train.npz there) compiled on another host: ``host``
    replaces fields of the host facts (``accelerator="cuda"``) or of its environment
    (``torch="0.0.0"``)."""
    (tmp_path / "spec.toml").write_text(NPZ_SPEC)
    facts = read_host(os.environ)
    env_fields = {k: v for k, v in host.items() if k in attrs.fields_dict(type(facts.environment))}
    other = attrs.evolve(
        facts,
        environment=attrs.evolve(facts.environment, **env_fields),
        **{k: v for k, v in host.items() if k not in env_fields},
    )
    lock = compile_layers(load_layers(str(tmp_path / "spec.toml"), sets, {}), other)
    write_lock(lock, tmp_path / "other.lock.toml")
    return tmp_path / "other.lock.toml"


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["verify", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


class TestVerify:
    def test_an_intact_lock_verifies(
        self, npz_lock: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A lock whose data and environment are unchanged: exit 0, no warning."""
        code, out = verify(capsys, str(npz_lock))
        assert code == 0 and f"\nok: {npz_lock}" in out and "warning" not in out

    def test_a_run_directory_names_its_lock(
        self, npz_lock: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``verify RUN_DIR`` checks RUN_DIR/run.lock.toml."""
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "run.lock.toml").write_text(npz_lock.read_text())
        assert verify(capsys, str(tmp_path / "run"))[0] == 0

    def test_an_edited_lock_names_the_table(
        self, npz_lock: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Editing one value of [execution] is a digest mismatch naming that table (exit 3)."""
        text = npz_lock.read_text()
        assert "log_every_n_steps = 50\n" in text
        npz_lock.write_text(text.replace("log_every_n_steps = 50\n", "log_every_n_steps = 5\n"))
        code, out = verify(capsys, str(npz_lock))
        assert code == 3 and "digest mismatch" in out and "changed: [execution]" in out
        assert len(out.strip().splitlines()) == 1

    def test_changed_data_is_refused_naming_the_file(
        self, npz_lock: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """New values in the same arrays: exit 3 naming the file, its role and both hashes."""
        data = npz_lock.parent / "train.npz"
        locked = read_lock(npz_lock).inputs.data[0]
        write_scan(data, gain=2.0)
        code, out = verify(capsys, str(npz_lock))
        assert code == 3
        assert f"data drift: {data} (train): locked {locked.sha256[:19]}" in out
        assert "arrays changed" not in out

    def test_allowed_data_drift_is_a_warning(
        self, npz_lock: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``--allow-drift data`` accepts changed content, with a warning."""
        write_scan(npz_lock.parent / "train.npz", gain=2.0)
        code, out = verify(capsys, str(npz_lock), "--allow-drift", "data")
        assert code == 0 and "warning: data drift" in out

    def test_a_missing_file_is_refused_even_when_allowed(
        self, npz_lock: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A missing data file cannot be allowed: the run could not read it."""
        (npz_lock.parent / "train.npz").unlink()
        code, out = verify(capsys, str(npz_lock), "--allow-drift", "data")
        assert code == 3 and "now missing" in out

    def test_changed_arrays_are_refused_even_when_allowed(
        self, npz_lock: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Other shapes contradict what the lock resolved from them: refused, naming the array."""
        write_scan(npz_lock.parent / "train.npz", patterns=12)
        code, out = verify(capsys, str(npz_lock), "--allow-drift", "data")
        assert code == 3
        assert "arrays changed: diff3d float32[16, 64, 64] → float32[12, 64, 64]" in out

    def test_environment_drift_warns_and_strict_refuses(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Other library versions: a warning by default, exit 3 under --strict."""
        write_scan(tmp_path / "train.npz")
        lock = lock_compiled_elsewhere(tmp_path, torch="0.0.0", python="3.0.0")
        code, out = verify(capsys, str(lock))
        assert code == 0 and "warning: environment drift: torch: locked 0.0.0, now" in out
        assert "environment drift: python: locked 3.0.0" in out
        code, out = verify(capsys, str(lock), "--strict")
        assert code == 3 and out.startswith("error: lock verification failed: environment drift")
        assert "torch: locked 0.0.0" in out and len(out.strip().splitlines()) == 1

    def test_a_missing_accelerator_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A lock for 2 GPUs on a host without visible GPUs: exit 3 without --strict."""
        write_scan(tmp_path / "train.npz")
        lock = lock_compiled_elsewhere(
            tmp_path, ("execution.accelerator='cuda'", "execution.devices=2"), accelerator="cuda"
        )
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
        code, out = verify(capsys, str(lock))
        assert code == 3 and "environment drift: accelerator: locked 2 × cuda, now 0 × cuda" in out

    def test_a_missing_lock_is_a_usage_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A path that is no file: exit 2."""
        assert verify(capsys, str(tmp_path / "absent.lock.toml"))[0] == 2

    def test_a_spec_is_not_a_lock(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A spec given as a lock: exit 3, saying it is not a lock."""
        (tmp_path / "spec.toml").write_text(NPZ_SPEC)
        code, out = verify(capsys, str(tmp_path / "spec.toml"))
        assert code == 3 and "not a ptycho-spec lock" in out


DATA = Drift(kind="data", key="/d/train.npz (train)", locked="a", now="b")
ENV = Drift(kind="environment", key="torch", locked="2.0", now="2.1")
BLOCKING = Drift(kind="data", key="/d/x.npz (test)", locked="a", now="missing", blocking=True)


class TestEnforce:
    def test_defaults(self) -> None:
        """By default environment drift passes and data drift does not."""
        assert enforce([ENV]) == (ENV,)
        with pytest.raises(LockError, match=r"data drift: /d/train\.npz"):
            enforce([ENV, DATA])

    def test_flags(self) -> None:
        """--allow-drift data lets data drift pass; --strict stops environment drift."""
        assert enforce([DATA, ENV], allow=["data"]) == (DATA, ENV)
        with pytest.raises(LockError, match="environment drift: torch"):
            enforce([DATA, ENV], allow=["data"], strict=True)

    def test_blocking_drift_is_never_allowed(self) -> None:
        """A blocking difference fails whatever the flags."""
        with pytest.raises(LockError, match="now missing"):
            enforce([BLOCKING], allow=["data"])

    def test_records(self, npz_lock: Path) -> None:
        """One TOML record per kind, with the lock digest and every drift of that kind."""
        lock = read_lock(npz_lock)
        records = drift_records(lock, [DATA, ENV])
        data = tomllib.loads(records["data-drift.toml"])
        assert data == {
            "lock_digest": lock.header.digest,
            "drift": [{"key": DATA.key, "locked": "a", "now": "b"}],
        }
        assert tomllib.loads(records["environment-drift.toml"])["drift"][0]["key"] == "torch"
        assert drift_records(lock, []) == {}


@pytest.mark.slow
def test_a_run_records_the_drift_it_went_ahead_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run LOCK --allow-drift data`` with other library versions runs, warns, and writes
    data-drift.toml and environment-drift.toml into the complete run directory."""
    from runner.data.npz import write_npz
    from runner.data.simulate import disk_probe, lines_object, raster_positions, simulate_scan

    x, y = raster_positions(88, 64, 6)
    scan = simulate_scan(
        lines_object(88, seed=5), disk_probe(64), x, y, nphotons=1e6, probe_scale=4.0, noise_seed=0
    )
    write_npz(scan, tmp_path / "train.npz")
    lock = lock_compiled_elsewhere(tmp_path, torch="0.0.0")
    write_npz(attrs.evolve(scan, amplitude=scan.amplitude * 1.01), tmp_path / "train.npz")
    run_lock(lock, tmp_path / "run", "--allow-drift", "data")
    err = capsys.readouterr().err
    assert "warning: data drift" in err and "warning: environment drift: torch" in err
    run = tmp_path / "run"
    assert (run / "COMPLETE").is_file()
    data = tomllib.loads((run / "data-drift.toml").read_text())
    assert [d["key"] for d in data["drift"]] == [f"{tmp_path / 'train.npz'} (train)"]
    environment = tomllib.loads((run / "environment-drift.toml").read_text())
    torch_drift = next(d for d in environment["drift"] if d["key"] == "torch")
    assert torch_drift["locked"] == "0.0.0" and data["lock_digest"] == read_lock(lock).header.digest
