"""``ptycho-spec resume``: exact continuation from last.ckpt, and every refusal.

The SIGKILL test (a real training process killed mid-epoch) is in test_replay_processes.py;
here interruptions are exceptions raised at chosen points of an in-process run.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from replay_kit import (
    RESUMABLE,
    Run,
    assert_log_continues,
    assert_same_results,
    compile_lock,
    run_lock,
)

from ptycho_spec.cli import main
from ptycho_spec.errors import DataError
from runner import rundir
from runner.run import execute
from runner.train.checkpoints import LOCK_KEY, read_checkpoint
from runner.train.resume import ResumeCheckpoint
from runner.train.sampling import EpochSampler, ResumableLoader


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The tiny train+infer lock (2 epochs of 5 steps, last.ckpt every 2 steps), run
    uninterrupted."""
    folder = tmp_path_factory.mktemp("reference")
    lock = compile_lock(folder, nepochs=2, execution=RESUMABLE)
    run_lock(lock, folder / "run")
    return Run(lock=lock, out=folder / "run")


class Interrupted(Exception):
    """Stands in for the job being killed."""


def resume(capsys: pytest.CaptureFixture[str], run_dir: Path) -> tuple[int, str]:
    code = main(["resume", str(run_dir)])
    return code, capsys.readouterr().err


def interrupted_copy(reference: Run, tmp_path: Path) -> Path:
    """The reference run directory as an interrupted run would leave it (no COMPLETE)."""
    copy = tmp_path / "run"
    shutil.copytree(reference.out, copy)
    (copy / "COMPLETE").unlink()
    return copy


def run_until(lock: Path, out: Path, monkeypatch: pytest.MonkeyPatch, *, step: int) -> None:
    """Run ``lock`` and stop it right after last.ckpt is written at global step ``step``."""
    save = ResumeCheckpoint._save

    def save_then_stop(self: ResumeCheckpoint, trainer) -> None:  # type: ignore[no-untyped-def]
        save(self, trainer)
        if trainer.global_step == step:
            raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(ResumeCheckpoint, "_save", save_then_stop)
        with pytest.raises(Interrupted):
            main(["run", str(lock), "--out", str(out)])


class TestExactResume:
    @pytest.mark.slow
    @pytest.mark.parametrize("step", [4, 6], ids=["mid-epoch", "first-step-of-epoch"])
    def test_resumed_run_equals_the_uninterrupted_one(
        self, reference_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int
    ) -> None:
        """Stopped after last.ckpt at ``step`` (5 steps per epoch) and resumed: the bundle
        bytes, metrics.json and reconstruction equal those of the uninterrupted run."""
        out = tmp_path / "run"
        run_until(reference_run.lock, out, monkeypatch, step=step)
        assert not (out / "COMPLETE").exists() and not (out / rundir.CLAIM).exists()
        assert (
            torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
        )
        assert main(["resume", str(out)]) == 0
        assert (out / "COMPLETE").is_file()
        assert_same_results(out, reference_run.out)
        assert_log_continues(out, reference_run.out, step=step)

    @pytest.mark.slow
    def test_a_run_stopped_after_training_does_not_train_again(
        self, reference_run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Stopped while reconstructing: resume restores the final weights and reconstructs."""
        out = tmp_path / "run"

        def stop(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise Interrupted

        with monkeypatch.context() as patch:
            patch.setattr(execute, "reconstruct", stop)
            with pytest.raises(Interrupted):
                main(["run", str(reference_run.lock), "--out", str(out)])
        fitted = []
        monkeypatch.setattr(ResumeCheckpoint, "on_train_batch_start", lambda *a: fitted.append(1))
        assert main(["resume", str(out)]) == 0
        assert not fitted
        assert_same_results(out, reference_run.out)


class TestRefusals:
    def test_a_complete_run(self, reference_run: Run, capsys: pytest.CaptureFixture[str]) -> None:
        """A complete run has nothing to resume: exit 2."""
        code, err = resume(capsys, reference_run.out)
        assert code == 2 and "the run is complete; nothing to resume" in err

    def test_not_a_run_directory(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A folder without run.lock.toml: exit 2."""
        code, err = resume(capsys, tmp_path)
        assert code == 2 and "not a run directory" in err

    def test_no_checkpoint(
        self, reference_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A run stopped before its first checkpoint: exit 2, saying to run the lock again."""
        shutil.copy(reference_run.out / "run.lock.toml", tmp_path / "run.lock.toml")
        code, err = resume(capsys, tmp_path)
        assert code == 2 and "no checkpoints/last.ckpt" in err

    def test_a_live_holder(
        self, reference_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A directory another process still writes: exit 1 naming that process."""
        run_dir = interrupted_copy(reference_run, tmp_path)
        with rundir.claim(run_dir, force=False, resume=True):
            code, err = resume(capsys, run_dir)
        assert code == 1 and f"in use by process {os.getpid()}" in err

    def test_an_edited_lock(
        self, reference_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The run directory's lock is verified like any lock: exit 3."""
        run_dir = interrupted_copy(reference_run, tmp_path)
        lock = run_dir / "run.lock.toml"
        lock.write_text(lock.read_text().replace("nepochs = 2\n", "nepochs = 3\n"))
        code, err = resume(capsys, run_dir)
        assert code == 3 and "changed: [canonical]" in err

    def test_another_runs_checkpoint(
        self, reference_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A last.ckpt written under another lock: exit 4, nothing restored."""
        run_dir = interrupted_copy(reference_run, tmp_path)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        state = torch.load(ckpt, weights_only=True)
        torch.save({**state, LOCK_KEY: "sha256:0000"}, ckpt)
        code, err = resume(capsys, run_dir)
        assert code == 4 and "written by another run (lock sha256:0000)" in err

    @pytest.mark.parametrize("damage", ["truncated", "pickle payload", "text"])
    def test_a_broken_or_hostile_checkpoint(
        self,
        reference_run: Run,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        damage: str,
    ) -> None:
        """A truncated, foreign or code-carrying last.ckpt: exit 4, one line, nothing run."""
        run_dir = interrupted_copy(reference_run, tmp_path)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        marker = tmp_path / "payload-ran"
        contents = {
            "truncated": ckpt.read_bytes()[: ckpt.stat().st_size // 2],
            "pickle payload": pickle.dumps(Payload(marker)),
            "text": b"not a checkpoint\n",
        }
        ckpt.write_bytes(contents[damage])
        code, err = resume(capsys, run_dir)
        assert code == 4 and "last.ckpt" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert not marker.exists()


class Payload:
    """Unpickling this creates ``marker``, the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


class TestReadCheckpoint:
    def test_a_checkpoint_must_name_its_lock(self, tmp_path: Path) -> None:
        """A Lightning checkpoint without this project's lock stamp is refused."""
        path = tmp_path / "x.ckpt"
        keys = ("state_dict", "loops", "callbacks", "optimizer_states", "global_step")
        torch.save(dict.fromkeys(keys, 0), path)
        with pytest.raises(DataError, match="names no lock"):
            read_checkpoint(path, lock_digest=None)

    def test_a_plain_state_dict_is_not_a_checkpoint(self, tmp_path: Path) -> None:
        """Weights alone are not a training checkpoint."""
        path = tmp_path / "x.ckpt"
        torch.save({"w": torch.zeros(2)}, path)
        with pytest.raises(DataError, match="not a Lightning training checkpoint"):
            read_checkpoint(path, lock_digest=None)


class TestResumableLoader:
    def test_a_loaded_position_skips_the_consumed_batches(self) -> None:
        """After load_state_dict, iterating yields exactly the rest of that epoch's batches."""

        def loader() -> ResumableLoader:
            sampler = EpochSampler(10, seed=3, shuffle=True)
            return ResumableLoader(list(range(10)), batch_size=3, sampler=sampler)

        whole = loader()
        whole.sampler.set_epoch(2)
        expected = [b.tolist() for b in whole]
        resumed = loader()
        resumed.load_state_dict({"epoch": 2, "consumed": 2})
        assert [b.tolist() for b in resumed] == expected[2:]
        assert [b.tolist() for b in resumed] == expected  # the skip applies once
        assert resumed.state_dict() == {"epoch": 2, "consumed": 2}
