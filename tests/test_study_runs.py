"""Studies that run: a study killed mid-way and run again, the summary and reports of its
results, and the slurm launcher through submitit's local executor."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from study_kit import write_study

from ptycho_spec.cli import main
from ptycho_spec.study.spec import read_study
from runner import rundir

pytestmark = pytest.mark.slow

GRID = "[grid]\ndata.n_groups = [2, 4]\n"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A two-point study killed (SIGKILL) as soon as its first point completed, then run
    again in this process; what the tests need to know of both runs."""
    folder = tmp_path_factory.mktemp("killed")
    study = write_study(folder, GRID)
    out = folder / "runs" / "study"
    # this process's environment as it is: the host's thread count is part of each point's lock,
    # so the study run again below finds the same locks
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.Popen(
        [sys.executable, "-m", "ptycho_spec.cli", "study", str(study)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first, second = out / "points" / "000", out / "points" / "001"
    try:
        wait_for(lambda: rundir.is_complete(first), 180, "the first point")
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    wait_for(lambda: rundir.holder(second) is None, 30, "the killed study's point to end")
    complete_before = (first / "COMPLETE").stat().st_mtime_ns
    second_started = (second / "run.lock.toml").is_file()
    progress = io.StringIO()
    with contextlib.redirect_stderr(progress):  # the study's progress lines
        code = main(["study", str(study)])
    return {
        "out": out,
        "code": code,
        "progress": progress.getvalue(),
        "complete_before": complete_before,
        "second_started": second_started,
    }


class TestResume:
    def test_killed_study_loses_nothing_finished(self, resumed: dict) -> None:
        """Running a killed study again keeps its complete point and runs the other, which the
        kill had stopped (its process died with the study's)."""
        out = resumed["out"]
        assert resumed["code"] == 0
        assert "2 points compiled" in resumed["progress"]
        assert "1 complete, 1 to run" in resumed["progress"]
        assert "[1/1] point 001 (data.n_groups=4): complete in" in resumed["progress"]
        assert (out / "points" / "000" / "COMPLETE").stat().st_mtime_ns == resumed[
            "complete_before"
        ]
        assert rundir.is_complete(out / "points" / "001")

    def test_a_complete_study_runs_nothing(
        self, resumed: dict, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A third run finds every point complete under its lock and only rewrites the summary."""
        study = read_study(str(resumed["out"].parent.parent / "study.toml"))
        assert main(["study", study.source]) == 0
        assert "2 complete, 0 to run" in capsys.readouterr().err


class TestSummary:
    def test_csv_rows_carry_each_points_metrics(self, resumed: dict) -> None:
        """summary.csv: one row per point with its varied key, status, wall time and every
        metric of its metrics.json, flattened."""
        out = resumed["out"]
        with open(out / "summary.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["id"] for r in rows] == ["000", "001"]
        assert [r["data.n_groups"] for r in rows] == ["2", "4"]
        assert {r["status"] for r in rows} == {"complete"}
        for row in rows:
            run = out / "points" / row["id"]
            report = json.loads((run / "metrics.json").read_text())
            timing = tomllib.loads((run / "timing.toml").read_text())
            assert float(row["wall_time_s"]) == timing["wall_time_s"]
            for channel in ("amplitude", "phase"):
                for name in ("ssim", "frc50", "psnr"):
                    expected = report["reconstruction"][channel][name]
                    assert float(row[f"{channel}_{name}"]) == expected
            assert float(row["train_loss"]) == report["history"][-1]["train_loss"]
            assert int(float(row["n_train_groups"])) == report["n_train_groups"]
        assert list(rows[0])[:8] == [
            "id",
            "data.n_groups",
            "status",
            "wall_time_s",
            "amplitude_ssim",
            "phase_ssim",
            "amplitude_frc50",
            "phase_frc50",
        ]

    def test_markdown_and_picture(self, resumed: dict) -> None:
        """summary.md holds the same table; summary.png is a picture."""
        out = resumed["out"]
        md = (out / "summary.md").read_text().splitlines()
        assert md[0] == "# study study"
        assert md[2].startswith("| id | data.n_groups | status | wall_time_s | amplitude_ssim |")
        assert [line.split(" | ")[:3] for line in md[4:]] == [
            ["| 000", "2", "complete"],
            ["| 001", "4", "complete"],
        ]
        png = (out / "summary.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000

    def test_runs_lists_the_points(self, resumed: dict, capsys: pytest.CaptureFixture[str]) -> None:
        """`runs DIR` lists each point with its status and headline metrics."""
        out = resumed["out"]
        assert main(["runs", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == [
            "run",
            "status",
            "task",
            "wall_time_s",
            "amplitude_ssim",
            "phase_ssim",
            "amplitude_frc50",
            "phase_frc50",
        ]
        ssim = json.loads((out / "points" / "001" / "metrics.json").read_text())
        fields = lines[2].split()
        assert fields[:3] == ["points/001", "complete", "train+infer"]
        assert fields[4] == f"{ssim['reconstruction']['amplitude']['ssim']:.4g}"

    def test_compare_shows_differences_and_metrics(
        self, resumed: dict, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`compare STUDY` prints the settings that differ between its points, then their
        metrics side by side."""
        out = resumed["out"]
        assert main(["compare", str(out)]) == 0
        text = capsys.readouterr().out
        settings, metrics = text.split("\nmetrics:\n")
        rows = [line.split() for line in settings.splitlines()[1:]]
        assert rows[0] == ["setting", str(out / "points" / "000"), str(out / "points" / "001")]
        assert ["data.n_groups", "2", "4"] in rows
        assert ["model.gridsize", "1", "1"] not in rows
        assert metrics.splitlines()[1].split()[0] == "amplitude_ssim"


def test_slurm_launcher_through_submitits_local_executor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The slurm launcher submits a job array whose job runs the point's lock; submitit's local
    executor stands in for SLURM."""
    pytest.importorskip("submitit")
    from ptycho_spec.commands.study import run_study

    study = write_study(
        tmp_path, '[launcher]\nkind = "slurm"\ntime_min = 5\n[grid]\ndata.n_groups = [2]\n'
    )
    out = tmp_path / "out"
    assert run_study(read_study(str(study)), out_dir=out, cluster="local") == 0
    err = capsys.readouterr().err
    assert "point 000 (data.n_groups=2): submitted as job" in err
    assert "point 000 (data.n_groups=2): complete in" in err
    run = out / "points" / "000"
    lock = json.loads((run / "COMPLETE").read_text())["lock_digest"]
    assert lock == tomllib.loads((out / "study.lock.toml").read_text())["points"][0]["lock_digest"]
    assert any((out / "slurm").glob("*_log.err"))
