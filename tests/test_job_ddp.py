"""Distributed training through Lightning's own launcher: 2 CPU processes over gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from runspec import write_spec


@pytest.mark.slow
def test_two_process_ddp_epoch(tmp_path: Path) -> None:
    """strategy = "ddp" with 2 devices trains on 2 ranks; only rank 0 writes the run."""
    spec = write_spec(tmp_path, execution='strategy = "ddp"\ndevices = 2', gridsize=2)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "ptycho_spec.cli", "run", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = tomllib.loads((out / "effective.toml").read_text())
    assert record["world_size"] == {"requested": 2, "effective": 2}
    assert record["strategy"] == {"requested": "ddp", "effective": "ddp"}
    assert record["device_ids"]["effective"] == [0, 1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and metrics["reconstruction"]["amplitude"]["ssim"] > -1
    assert (out / "model.bundle").is_file() and (out / "COMPLETE").is_file()
    assert done.stderr.count("run complete") == 1  # the other rank wrote and announced nothing
