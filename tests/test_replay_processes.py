"""Replays across processes on CPU: two ``ptycho-spec run LOCK`` processes agree bit for bit,
and a training process killed with SIGKILL mid-epoch resumes to the same result.

The lock uses gridsize 2 and two loader workers (the hardest case for determinism and for
resuming: workers prefetch ahead of the training loop), 10 steps per epoch, 2 epochs, and
last.ckpt every 3 steps. It pins two CPU threads, and the second process runs with
``OMP_NUM_THREADS=1``: a replaying host whose default thread count differs from the compiling
host's (how a replay once differed from its run: a reduction split over one thread adds in
another order than over two).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
from replay_kit import Run, assert_log_continues, assert_same_results, compile_lock

from ptycho_spec.cli import main

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 10  # 20 training groups in batches of 2
TIMEOUT_S = 300


def start_run(lock: Path, out: Path, **environ: str) -> subprocess.Popen[bytes]:
    """``ptycho-spec run LOCK --out OUT`` in a new process group (its loader workers with it),
    with ``environ`` added to this process's environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "ptycho_spec.cli", "run", str(lock), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=os.environ | environ,
    )


def finish(process: subprocess.Popen[bytes]) -> None:
    _, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, err.decode()[-2000:]


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Run]:
    """The lock run by two processes at once, the second with one OpenMP thread by default."""
    folder = tmp_path_factory.mktemp("twins")
    lock = compile_lock(
        folder,
        gridsize=2,
        nepochs=2,
        execution="num_workers = 2\ncheckpoint_every_n_steps = 3",
        sets=("training.batch_size=2", "execution.cpu_threads=2"),
    )
    a = start_run(lock, folder / "a")
    b = start_run(lock, folder / "b", OMP_NUM_THREADS="1")
    finish(a)
    finish(b)
    return Run(lock=lock, out=folder / "a"), Run(lock=lock, out=folder / "b")


def test_two_processes_agree_bit_for_bit(twin_runs: tuple[Run, Run]) -> None:
    """Same lock, two processes, two default thread counts: identical model.bundle bytes,
    metrics.json and reconstruction arrays (gridsize 2, two loader workers), both run with the
    lock's two threads."""
    a, b = twin_runs
    assert_same_results(a.out, b.out)
    for run in (a, b):
        effective = tomllib.loads((run.out / "effective.toml").read_text())
        assert effective["cpu_threads"] == {"requested": 2, "effective": 2}


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(
    twin_runs: tuple[Run, Run], tmp_path: Path
) -> None:
    """A training process killed with SIGKILL once last.ckpt exists (mid-epoch), then
    ``ptycho-spec resume``: the run completes with the uninterrupted run's results."""
    reference = twin_runs[0]
    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "last.ckpt"
    process = start_run(reference.lock, out)
    deadline = time.monotonic() + TIMEOUT_S
    while not ckpt.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert 0 < step < 2 * STEPS_PER_EPOCH and step % STEPS_PER_EPOCH != 0
    assert not (out / "COMPLETE").exists()

    assert main(["resume", str(out)]) == 0
    assert (out / "COMPLETE").is_file() and not list(out.glob("**/.*.tmp"))
    assert_same_results(out, reference.out)
    assert_log_continues(out, reference.out, step=step)
