"""Studies without running a point: the study file, its points, compile-before-run, the sweep
command line, the local launcher's device assignment, the slurm parameters and the summary's
flattening of metrics."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from study_kit import write_base, write_study

from ptycho_spec.cli import main
from ptycho_spec.compile import compile_spec
from ptycho_spec.errors import SpecError, UsageError
from ptycho_spec.facts import read_host
from ptycho_spec.lock import read_lock
from ptycho_spec.schema_export import study_schema_text
from ptycho_spec.study.compile import compile_study, expand
from ptycho_spec.study.lock import read_study_lock
from ptycho_spec.study.spec import loads_study, read_study
from ptycho_spec.study.summary import Row, csv_text, flat_metrics, markdown_text

SPECS = Path(__file__).parent.parent / "specs"


def compile_file(path: Path) -> tuple:
    return compile_study(read_study(str(path)), {}, read_host({}))


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An interpreter for the local launcher's point processes that prints its devices and
    arguments instead of running the point, and fails (exit 3) for the lock of point ``001``
    or one named ``fail``."""
    fake = tmp_path / "python"
    fake.write_text(
        '#!/bin/sh\necho "devices=$CUDA_VISIBLE_DEVICES args=$*"\nsleep 0.3\n'
        'case "$(basename "$4")" in 001.*|fail.*) echo "error: it broke"; exit 3;; esac\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    return fake


class TestStudyFile:
    def test_points_cross_grid_zip_and_repeats(self) -> None:
        """Points are grid × zip rows × repeats, the first grid key slowest; repeats add to the
        base seed."""
        study = loads_study(
            'study_version = 1\nbase = "b.toml"\nrepeats = 2\n'
            "[grid]\nmodel.gridsize = [1, 2]\n'data.n_groups' = [64, \"all\"]\n"
            "[zip]\ntraining.nepochs = [1, 2]\ntraining.learning_rate = [1e-3, 2e-3]\n",
            source="s.toml",
        )
        points = expand(study, base_seed=7)
        assert len(points) == 2 * 2 * 2 * 2
        assert study.varied == (
            "model.gridsize",
            "data.n_groups",
            "training.nepochs",
            "training.learning_rate",
            "run.seed",
        )
        assert points[0].label == (
            "model.gridsize=1, data.n_groups=64, training.nepochs=1, "
            "training.learning_rate=0.001, run.seed=7"
        )
        assert dict(points[3].overrides) == {
            "model.gridsize": 1,
            "data.n_groups": 64,
            "training.nepochs": 2,
            "training.learning_rate": 2e-3,
            "run.seed": 8,
        }
        assert dict(points[-1].overrides)["data.n_groups"] == "all"
        assert [p.id for p in points[:2]] == ["000", "001"]

    def test_every_problem_located_at_once(self) -> None:
        """Bad tables, empty or scalar axes, unequal zips, keys varied twice, a repeated seed
        that is also varied, and a bad setting: all reported, each at its line."""
        text = (
            "study_version = 1\n"  # 1
            "repeats = 2\n"  # 2
            "[launcher]\n"  # 3
            'kind = "slurmm"\n'  # 4
            "[grid]\n"  # 5
            "model.gridsize = 2\n"  # 6
            "data.n_groups = []\n"  # 7
            "run.seed = [1, 2]\n"  # 8
            "[zip]\n"  # 9
            "training.nepochs = [1, 2]\n"  # 10
            "training.learning_rate = [1e-3]\n"  # 11
            "run = [1, 2]\n"  # 12
        )
        with pytest.raises(SpecError) as caught:
            loads_study(text, source="s.toml")
        rendered = [i.render() for i in caught.value.issues]
        assert rendered == [
            "s.toml: base: missing: name the run spec every point starts from",
            's.toml:4: launcher.kind: must be one of "local", "slurm" (got "slurmm"); did you mean "slurm"?',
            "s.toml:6: grid.model.gridsize: expected a non-empty array of values (got 2)",
            "s.toml:7: grid.data.n_groups: expected a non-empty array of values (got an empty array)",
            "s.toml:8: grid.run.seed: repeats sets run.seed for each repeat; vary run.seed or use repeats, not both",
            "s.toml:11: zip.training.learning_rate: has 1 values but zip.training.nepochs has 2; [zip] arrays are taken together",
            "s.toml:12: zip.run: also varied by [grid] run.seed (line 8)",
        ]

    def test_schema_is_current(self) -> None:
        """specs/study-v1.schema.json matches the study classes and the run spec's settings."""
        committed = (SPECS / "study-v1.schema.json").read_text(encoding="utf-8")
        assert committed == study_schema_text(), (
            "specs/study-v1.schema.json is stale; regenerate with: "
            "ptycho-spec schema --study > specs/study-v1.schema.json"
        )
        grid = json.loads(committed)["properties"]["grid"]
        assert grid["properties"]["model"]["properties"]["gridsize"]["type"] == "array"

    def test_format_document_names_every_setting(self) -> None:
        """specs/study-v1.md documents every study setting and launcher setting."""
        from ptycho_spec.study.spec import Launcher, Settings
        from ptycho_spec.tree import fields_of

        text = (SPECS / "study-v1.md").read_text(encoding="utf-8")
        names = [*fields_of(Settings), *fields_of(Launcher)]
        assert [n for n in names if f"| `{n}` |" not in text and n != "launcher"] == []


class TestCompileBeforeRun:
    def test_every_bad_point_named_and_nothing_written(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A study with bad values exits 2 listing each bad point's issues, naming the point and
        the study line, before anything is written."""
        study = write_study(
            tmp_path, '[grid]\nmodel.gridsize = [1, "two"]\ndata.n_groups = [4, -1]\n'
        )
        assert main(["study", str(study), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err == [
            f"point 001 (model.gridsize=1, data.n_groups=-1): {study}:5: data.n_groups: "
            "must be ≥ 1 (got -1)",
            f'point 002 (model.gridsize="two", data.n_groups=4): {study}:4: model.gridsize: '
            'expected an integer (got "two")',
            f'point 003 (model.gridsize="two", data.n_groups=-1): {study}:4: model.gridsize: '
            'expected an integer (got "two")',
            f'point 003 (model.gridsize="two", data.n_groups=-1): {study}:5: data.n_groups: '
            "must be ≥ 1 (got -1)",
        ]
        assert not (tmp_path / "out").exists()

    def test_compile_only_writes_every_lock_and_the_study_lock(self, tmp_path: Path) -> None:
        """--compile-only writes each point's lock and study.lock.toml (overrides and digests)
        and runs nothing; a point's lock is the base spec with the point's --set values."""
        study = write_study(tmp_path, "repeats = 2\n[grid]\ndata.n_groups = [4, 8]\n")
        out = tmp_path / "out"
        assert main(["study", str(study), "--out", str(out), "--compile-only"]) == 0
        listed = read_study_lock(out)
        assert listed.varied == ("data.n_groups", "run.seed")
        assert [dict(p.overrides) for p in listed.points] == [
            {"data.n_groups": n, "run.seed": seed} for n in (4, 8) for seed in (3, 4)
        ]
        for point in listed.points:
            lock = read_lock(out / "locks" / f"{point.id}.lock.toml")
            assert lock.header.digest == point.lock_digest
        sets = ["data.n_groups=8", "run.seed=4"]
        same = compile_spec(str(tmp_path / "base.toml"), sets, environ=os.environ)  # as the study
        assert listed.points[3].run_digest == same.header.run_digest
        assert read_lock(out / "locks" / "003.lock.toml").provenance["data.n_groups"].line == 5
        assert not (out / "points").exists()

    def test_paths_in_the_grid_are_relative_to_the_study(self, tmp_path: Path) -> None:
        """A file setting given in [grid] resolves against the study file's folder."""
        write_base(tmp_path)
        (tmp_path / "sub").mkdir()
        study = tmp_path / "sub" / "s.toml"
        study.write_text(
            'study_version = 1\nbase = "../base.toml"\n[grid]\nrun.output_dir = ["a", "b"]\n'
        )
        compiled, _ = compile_file(study)
        # the locks name them relative to the project: the base spec's folder
        assert {c.lock.header.project_dir for c in compiled} == {str(tmp_path)}
        dirs = [c.lock.resolved.canonical.run.output_dir for c in compiled]
        assert dirs == ["sub/a", "sub/b"]

    def test_missing_base(self, tmp_path: Path) -> None:
        """A base spec that does not exist is named at the study file."""
        study = tmp_path / "s.toml"
        study.write_text('study_version = 1\nbase = "nope.toml"\n')
        with pytest.raises(SpecError, match=r"base: no such spec file: .*nope\.toml"):
            compile_file(study)

    def test_slurm_points_take_the_tasks_cpus(self, tmp_path: Path) -> None:
        """A slurm study's points lock launcher.cpus_per_task threads, not this host's count:
        they run on compute nodes. A point that sets cpu_threads keeps its own."""
        study = write_study(
            tmp_path,
            '[grid]\nexecution.cpu_threads = ["auto", 2]\n'
            '[launcher]\nkind = "slurm"\ncpus_per_task = 6\n',
        )
        compiled, _ = compile_file(study)
        assert [c.lock.resolved.execution.cpu_threads for c in compiled] == [6, 2]
        assert compiled[0].lock.provenance["execution.cpu_threads"].detail == (
            "launcher.cpus_per_task = 6"
        )

    def test_example_study_compiles(self) -> None:
        """examples/studies/training_size.toml: gridsize 1 and 2 × three training set sizes."""
        example = Path(__file__).parent.parent / "examples" / "studies" / "training_size.toml"
        compiled, warnings = compile_file(example)
        assert warnings == ()
        assert [c.point.label for c in compiled][:2] == [
            "model.gridsize=1, data.n_groups=32",
            "model.gridsize=1, data.n_groups=64",
        ]
        assert {c.lock.resolved.canonical.model.gridsize for c in compiled} == {1, 2}


class TestSweep:
    def test_writes_and_runs_the_same_study(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """sweep writes OUT/study.toml, which `study` compiles to the same points; values are
        parsed as --set values are."""
        base = write_base(tmp_path)
        out = tmp_path / "sweep"
        args = ["sweep", str(base), "--grid", "data.n_groups=4,all", "--grid"]
        args += ["model.gridsize=1,2", "--out", str(out), "--compile-only"]
        assert main(args) == 0
        first = read_study_lock(out)
        assert [dict(p.overrides) for p in first.points][1] == {
            "data.n_groups": 4,
            "model.gridsize": 2,
        }
        assert dict(first.points[2].overrides)["data.n_groups"] == "all"
        assert main(["study", str(out / "study.toml"), "--compile-only"]) == 0
        assert read_study_lock(out) == first
        args[3] = "data.n_groups=4,8"
        assert main(args) == 2
        assert "holds another study" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("grid", "expected"),
        [
            (
                "model.gridsze=1,2",
                [
                    'point 000 (model.gridsze=1): {study}:8: model.gridsze: unknown key; did you mean "gridsize"?',
                    'point 001 (model.gridsze=2): {study}:8: model.gridsze: unknown key; did you mean "gridsize"?',
                ],
            ),
            (
                "model.gridsize=1,two",
                [
                    'point 001 (model.gridsize="two"): {study}:8: model.gridsize: expected an integer (got "two")'
                ],
            ),
            (
                "model.gridsize",
                [
                    "<spec>: --grid model.gridsize: expected KEY=V1,V2,... (a dotted setting such as model.gridsize)"
                ],
            ),
        ],
        ids=["bad key", "bad type", "no values"],
    )
    def test_bad_grid_exits_2_naming_the_point(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], grid: str, expected: list[str]
    ) -> None:
        """Bad keys or values in --grid exit 2, each issue naming its point; nothing runs."""
        base = write_base(tmp_path)
        out = tmp_path / "sweep"
        assert main(["sweep", str(base), "--grid", grid, "--out", str(out)]) == 2
        study = out / "study.toml"
        assert capsys.readouterr().err.splitlines() == [e.format(study=study) for e in expected]
        assert not (out / "study.lock.toml").exists()


class TestLaunchers:
    def test_devices_are_handed_out_and_taken_back(self) -> None:
        """Points take execution.devices of the free GPUs, lowest first, and give them back."""
        from ptycho_spec.commands.launch import Slots, device_ids

        slots = Slots(device_ids({"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, 3))
        assert slots.take(2) == ("4", "5")
        assert slots.take(2) is None
        assert slots.take(1) == ("6",)
        slots.give(("5", "4"))
        assert slots.take(2) == ("4", "5")
        assert device_ids({}, 2) == ["0", "1"]
        with pytest.raises(UsageError, match="CUDA_VISIBLE_DEVICES names 1"):
            device_ids({"CUDA_VISIBLE_DEVICES": "3"}, 2)

    def test_one_point_per_free_device_set(self, tmp_path: Path, stand_in: Path) -> None:
        """With launcher.gpus, each point's process gets its own CUDA_VISIBLE_DEVICES and
        starts when enough devices are free; a failing point reports its exit code and last
        line."""
        from ptycho_spec.commands.launch import Job, run_local

        jobs = [
            Job(
                id=name,
                label="",
                lock=tmp_path / f"{name}.lock.toml",
                run_dir=tmp_path / name,
                log=tmp_path / "logs" / f"{name}.log",
                devices=devices,
                num_nodes=1,
                cuda=True,
            )
            for name, devices in (("a", 1), ("b", 1), ("c", 2), ("fail", 1))
        ]
        events: list[str] = []
        outcomes = run_local(
            jobs,
            gpus=2,
            environ={"CUDA_VISIBLE_DEVICES": "6,7"},
            say=lambda job, what: events.append(f"{job.id} {what.split(' in ')[0]}"),
        )
        assert events[:2] == ["a started on GPU 6", "b started on GPU 7"]
        assert events[4:6] == ["c started on GPU 6, 7", "c complete"]
        assert events[6:] == ["fail started on GPU 6", "fail failed"]
        first = (tmp_path / "logs" / "a.log").read_text().splitlines()[0]
        assert (
            first
            == f"devices=6 args=-m ptycho_spec.cli run {tmp_path / 'a.lock.toml'} --out {tmp_path / 'a'} --force"
        )
        assert (tmp_path / "logs" / "c.log").read_text().startswith("devices=6,7 ")
        assert {k: o.status for k, o in outcomes.items()} == {
            "a": "complete",
            "b": "complete",
            "c": "complete",
            "fail": "failed",
        }
        log = tmp_path / "logs" / "fail.log"
        assert outcomes["fail"].detail == f"exit 3: error: it broke; see {log}"

    def test_a_failed_point_does_not_stop_the_study(
        self, tmp_path: Path, stand_in: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A failing point is reported with its reason; the others run, the summary is
        written and the study exits 1."""
        study = write_study(tmp_path, "[grid]\ndata.n_groups = [2, 3, 4]\n")
        out = tmp_path / "out"
        assert main(["study", str(study), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        log = out / "logs" / "001.log"
        assert "[2/3] point 001 (data.n_groups=3): failed in" in err
        assert f"(exit 3: error: it broke; see {log})" in err
        assert "[3/3] point 002 (data.n_groups=4): complete in" in err
        assert "1 of 3 points failed: 001" in err
        summary = (out / "summary.csv").read_text().splitlines()
        assert [line.split(",")[:3] for line in summary[1:]] == [
            ["000", "2", "complete"],
            ["001", "3", "failed"],
            ["002", "4", "complete"],
        ]

    def test_terminated_study_stops_its_points_and_summarizes(
        self, tmp_path: Path, stand_in: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """SIGTERM (``timeout``, a scheduler) stops the running point and still writes the
        summary; the study exits 130 as on Ctrl-C."""
        import signal
        import threading

        study = write_study(tmp_path, "[grid]\ndata.n_groups = [2, 3, 4]\n")
        out = tmp_path / "out"
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            code = main(["study", str(study), "--out", str(out)])
        finally:
            timer.cancel()
        assert code == 130
        assert capsys.readouterr().err.splitlines()[-2:] == [
            f"summary: {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'summary.png'}",
            "interrupted",
        ]
        assert len((out / "summary.csv").read_text().splitlines()) == 4
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def test_points_that_cannot_fit_are_refused_before_running(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A point asking more devices than launcher.gpus hands out exits 2 naming it."""
        study = write_study(tmp_path, "[launcher]\ngpus = 1\n[grid]\nexecution.devices = [1, 2]\n")
        assert main(["study", str(study), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert (
            "point 001 (execution.devices=2): execution.devices = 2 exceeds launcher.gpus = 1"
            in err
        )
        assert not (tmp_path / "out" / "points").exists()

    def test_slurm_parameters_follow_the_lock(self, tmp_path: Path) -> None:
        """num_nodes → nodes, devices → tasks per node (one DDP process each) and, on CUDA,
        GPUs per node; partition, account, time and array width from [launcher]."""
        from ptycho_spec.commands.launch import Job, job_parameters
        from ptycho_spec.study.spec import Launcher

        job = Job(
            id="000",
            label="",
            lock=tmp_path,
            run_dir=tmp_path,
            log=tmp_path,
            devices=4,
            num_nodes=2,
            cuda=True,
        )
        launcher = Launcher(kind="slurm", partition="gpu", account="ptycho", time_min=30)
        assert job_parameters(launcher, job, name="s") == {
            "name": "s",
            "timeout_min": 30,
            "nodes": 2,
            "tasks_per_node": 4,
            "cpus_per_task": 1,
            "slurm_array_parallelism": 64,
            "gpus_per_node": 4,
            "slurm_partition": "gpu",
            "slurm_account": "ptycho",
        }

    def test_slurm_submits_job_arrays_through_sbatch(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without sbatch the slurm launcher exits 2 before anything runs; with it, the points
        go to sbatch as one job array carrying the [launcher] settings and each point's
        resources, and a refusal by sbatch exits 1 quoting it. (A stand-in sbatch keeps the
        script it is given and refuses it; srun is never called.)"""
        pytest.importorskip("submitit")
        study = write_study(
            tmp_path,
            '[launcher]\nkind = "slurm"\npartition = "gpu"\ntime_min = 30\n'
            "[grid]\ndata.n_groups = [2, 4]\n",
        )
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
        assert main(["study", str(study), "--out", str(tmp_path / "out")]) == 2
        assert "no sbatch or srun on this host's PATH" in capsys.readouterr().err
        sbatch, srun = tmp_path / "bin" / "sbatch", tmp_path / "bin" / "srun"
        sbatch.parent.mkdir()
        srun.write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it; the jobs would use it
        srun.chmod(0o755)
        sbatch.write_text(
            f'#!/bin/sh\n/bin/cp "$1" {tmp_path / "submitted.sh"}\n'
            'echo "sbatch: error: invalid partition specified: gpu" >&2\nexit 1\n'
        )
        sbatch.chmod(0o755)
        assert main(["study", str(study), "--out", str(tmp_path / "out")]) == 1
        assert capsys.readouterr().err.splitlines()[-1] == (
            "error: sbatch refused the job array: sbatch: error: invalid partition specified: gpu"
        )
        script = (tmp_path / "submitted.sh").read_text()
        for line in (
            "#SBATCH --array=0-1%2",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=30",
            "#SBATCH --nodes=1",
            "#SBATCH --ntasks-per-node=1",
            "#SBATCH --job-name=study",
        ):
            assert line in script.splitlines()
        assert "--gpus-per-node" not in script  # CPU points ask for no GPUs

    def test_slurm_without_submitit_exits_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Asking for the slurm launcher without submitit says how to install it."""
        monkeypatch.setitem(sys.modules, "submitit", None)
        study = write_study(tmp_path, '[launcher]\nkind = "slurm"\n')
        assert main(["study", str(study), "--out", str(tmp_path / "out")]) == 2
        assert "pip install 'ptycho-spec[slurm]'" in capsys.readouterr().err


class TestSummaryTables:
    def test_metrics_flattened(self) -> None:
        """Nested numbers flatten with underscores, the reconstruction's without its prefix;
        the last epoch stands for the history; curves and strings are left out."""
        report = {
            "task": "train+infer",
            "history": [{"epoch": 0.0, "train_loss": 2.0}, {"epoch": 1.0, "train_loss": 1.0}],
            "scaling": {"input_scale": 1.5},
            "reconstruction": {"amplitude": {"ssim": 0.5, "frc": [1.0, 0.2], "frc50": 3.0}},
            "refine": {"iterations": 2, "nll_per_iteration": [3.0, 2.0]},
        }
        assert flat_metrics(report) == {
            "train_loss": 1.0,
            "scaling_input_scale": 1.5,
            "amplitude_ssim": 0.5,
            "amplitude_frc50": 3.0,
            "refine_iterations": 2.0,
        }

    def test_rows_and_columns(self) -> None:
        """One row per point: varied keys, status, wall time, then metrics (headline first)."""
        rows = [
            Row(
                id="000",
                overrides={"data.n_groups": 64},
                status="complete",
                wall_time_s=1.5,
                metrics={"train_loss": 0.25, "amplitude_ssim": 0.5},
            ),
            Row(id="001", overrides={"data.n_groups": "all"}, status="failed"),
        ]
        assert csv_text(rows, ["data.n_groups"]).splitlines() == [
            "id,data.n_groups,status,wall_time_s,amplitude_ssim,train_loss",
            "000,64,complete,1.5,0.5,0.25",
            "001,all,failed,,,",
        ]
        md = markdown_text(rows, ["data.n_groups"], title="t").splitlines()
        assert md[2:] == [
            "| id | data.n_groups | status | wall_time_s | amplitude_ssim | train_loss |",
            "|---|---|---|---|---|---|",
            "| 000 | 64 | complete | 1.5 | 0.5 | 0.25 |",
            "| 001 | all | failed |  |  |  |",
        ]


def test_study_compiler_imports_no_torch(tmp_path: Path) -> None:
    """Compiling a study (and its sweep) loads neither torch nor the runner."""
    import subprocess

    study = write_study(tmp_path, "[grid]\ndata.n_groups = [4, 8]\n")
    code = (
        "import sys; from ptycho_spec.cli import main; "
        f"rc = main(['study', {str(study)!r}, '--compile-only', '--out', {str(tmp_path / 'o')!r}]); "
        "bad = [m for m in ('torch', 'lightning', 'runner.run') if m in sys.modules]; "
        "print(rc, bad)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.stdout.strip() == "0 []"
