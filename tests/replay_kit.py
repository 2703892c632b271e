"""Shared pieces of the replay, resume and fault tests: tiny locks, runs, hashes."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
from attrs import frozen
from runspec import write_spec

from ptycho_spec.cli import main

# Checkpoints every 2 optimizer steps: 5 steps per epoch of the tiny spec (20 training groups,
# batches of 4), so last.ckpt is mostly mid-epoch.
RESUMABLE = "checkpoint_every_n_steps = 2"


@frozen
class Run:
    """A compiled lock and the run directory it was run into."""

    lock: Path
    out: Path


def compile_lock(folder: Path, *, name: str = "tiny", sets: tuple[str, ...] = (), **spec) -> Path:
    """Write a tiny spec (``runspec.write_spec`` arguments) and compile it beside itself."""
    spec_path = write_spec(folder, name=name, **spec)
    lock = folder / f"{name}.lock.toml"
    args = ["compile", str(spec_path), "-o", str(lock)]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    return lock


def run_lock(lock: Path, out: Path, *extra: str) -> None:
    assert main(["run", str(lock), "--out", str(out), *extra]) == 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def array_hashes(path: Path) -> dict[str, str]:
    """sha256 of each array's bytes, with its dtype and shape."""
    with np.load(path, allow_pickle=False) as npz:
        return {
            k: f"{npz[k].dtype}{npz[k].shape}:{hashlib.sha256(npz[k].tobytes()).hexdigest()}"
            for k in npz.files
        }


def assert_same_results(a: Path, b: Path) -> None:
    """Two run directories hold the same model bundle (bytes), metrics and reconstruction."""
    assert sha256(a / "model.bundle") == sha256(b / "model.bundle")
    assert json.loads((a / "metrics.json").read_text()) == json.loads(
        (b / "metrics.json").read_text()
    )
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert array_hashes(a / "reconstruction.npz") == array_hashes(b / "reconstruction.npz")


def assert_log_continues(resumed: Path, reference: Path, *, step: int) -> None:
    """A run resumed from global step ``step`` has the uninterrupted run's CSV log rows, in
    order, but for the per-step row of the checkpoint's own batch (logged after the save)."""

    def rows(run_dir: Path) -> list[dict[str, str]]:
        with (run_dir / "logs" / "metrics.csv").open(newline="") as file:
            return list(csv.DictReader(file))

    expected = rows(reference)
    boundary = [r for r in expected if r["step"] == str(step - 1) and r["train_loss_step"]]
    assert len(boundary) == 1
    assert rows(resumed) == [r for r in expected if r is not boundary[0]]
