"""Locks that travel: paths relative to the project, data found by content
(``ptycho_spec.locate``; specs/lockfile-v1.md, "Finding the data")."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from replay_kit import array_hashes, assert_same_results, sha256
from test_lock import _redigest
from test_replay_verify import NPZ_SPEC, write_scan

from ptycho_spec.cli import main
from ptycho_spec.compile import compile_spec
from ptycho_spec.locate import locate_inputs, recorded_path
from ptycho_spec.lock import Lock, dumps_lock, read_lock
from ptycho_spec.toml_lines import parse_toml

# No learning-rate warm-up and uncentred inputs, as before revisions 3 and 4: the same run as a
# revision 1 lock of it.
SPEC = (
    NPZ_SPEC.replace('train_file = "train.npz"', 'train_file = "data/train.npz"')
    .replace("[training]\n", "[training]\nwarmup_steps = 0\n")
    .replace("[model]\n", "[model]\ncenter_input = false\n")
)
INFER_SPEC = """\
spec_version = 1
[run]
task = "infer"
[data]
source = "npz"
train_file = "data/train.npz"
test_fraction = 0.25
n_groups = "all"
[inference]
bundle = "runs/spec/model.bundle"
[execution]
accelerator = "cpu"
enable_progress_bar = false
"""


def make_project(root: Path) -> Path:
    """``root/spec.toml`` training on ``root/data/train.npz``, compiled beside it to
    ``root/spec.lock.toml``."""
    (root / "data").mkdir(parents=True)
    write_scan(root / "data" / "train.npz")
    (root / "spec.toml").write_text(SPEC)
    assert main(["compile", str(root / "spec.toml")]) == 0
    return root / "spec.lock.toml"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def absolute_revision_1(lock_path: Path, out: Path) -> Path:
    """The lock at ``lock_path`` as format revision 1 wrote it: every path absolute, no
    ``project_dir``, ``cpu_threads``, ``warmup_steps``, ``center_input`` or
    ``calibrate_probe``, digests over that text."""
    data = parse_toml(lock_path.read_text())
    project = Path(data["lock"].pop("project_dir"))
    data["execution"].pop("cpu_threads")
    data["provenance"].pop("execution.cpu_threads")
    data["canonical"]["training"].pop("warmup_steps")
    data["provenance"].pop("training.warmup_steps")
    data["canonical"]["model"].pop("center_input")
    data["provenance"].pop("model.center_input")
    data["canonical"]["training"].pop("calibrate_probe")
    data["provenance"].pop("training.calibrate_probe")
    data["lock"]["format_revision"] = 1
    for item in data["inputs"]["data"] + data["inputs"]["specs"]:
        item["path"] = str(project / item["path"])
    data["canonical"]["data"]["train_file"] = str(project / "data" / "train.npz")
    data["canonical"]["run"]["output_dir"] = str(project / "runs" / "spec")
    for origin in data["provenance"].values():
        if "file" in origin:
            origin["file"] = str(project / origin["file"])
    out.write_text(dumps_lock(Lock.from_dict(_redigest(data))))
    return out


class TestRecordedPaths:
    def test_relative_below_the_project_absolute_elsewhere(self, tmp_path: Path) -> None:
        assert recorded_path("/p/data/train.npz", "/p") == "data/train.npz"
        assert recorded_path("/p/../q/train.npz", "/p") == "/q/train.npz"
        assert recorded_path("/pq/train.npz", "/p") == "/pq/train.npz"

    def test_the_lock_names_files_relative_to_the_spec(self, tmp_path: Path) -> None:
        """Data, spec files, the run directory and provenance are named below the spec's folder;
        the folder itself is recorded as a hint."""
        lock = read_lock(make_project(tmp_path))
        assert [(d.role, d.path) for d in lock.inputs.data] == [("train", "data/train.npz")]
        assert [s.path for s in lock.inputs.specs] == ["spec.toml"]
        canonical = lock.resolved.canonical
        assert (canonical.data.train_file, canonical.run.output_dir) == (
            "data/train.npz",
            "runs/spec",
        )
        assert lock.provenance["data.measurement"].file == "data/train.npz"
        assert lock.provenance["data.n_groups"].detail == (
            "all 12 patterns of data/train.npz split by data.test_fraction"
        )
        assert lock.header.project_dir == str(tmp_path)

    def test_data_outside_the_project_stays_absolute(self, tmp_path: Path) -> None:
        write_scan(tmp_path / "train.npz")
        (tmp_path / "project").mkdir()
        spec = tmp_path / "project" / "spec.toml"
        spec.write_text(NPZ_SPEC.replace('"train.npz"', '"../train.npz"'))
        lock = compile_spec(str(spec), environ={})
        assert lock.inputs.data[0].path == str(tmp_path / "train.npz")

    def test_the_digest_does_not_depend_on_where_the_project_lives(self, tmp_path: Path) -> None:
        """The same run compiled in two checkouts: the same digests; only the hint differs."""
        a = make_project(tmp_path / "a")
        b = make_project(tmp_path / "checkouts" / "b")
        assert read_lock(a).header.digest == read_lock(b).header.digest
        differ = set(a.read_text().splitlines()) ^ set(b.read_text().splitlines())
        assert {line.split(" = ")[0] for line in differ} == {"project_dir"}


class TestFindingTheData:
    def test_a_lock_moved_with_its_data_verifies_without_options(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        make_project(tmp_path / "a")
        shutil.move(tmp_path / "a", tmp_path / "b")
        code, out = cli(capsys, "verify", str(tmp_path / "b" / "spec.lock.toml"))
        assert code == 0, out
        assert f"train: data/train.npz found at {tmp_path / 'b' / 'data' / 'train.npz'}" in out

    def test_data_kept_elsewhere_is_found_with_data_dir(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The lock alone in a folder: exit 3 listing every place tried; found by file name in
        a ``--data-dir`` or a ``PTYCHO_DATA_DIRS`` folder."""
        make_project(tmp_path / "a")
        (tmp_path / "handed").mkdir()
        lock = shutil.move(tmp_path / "a" / "spec.lock.toml", tmp_path / "handed")
        shutil.move(tmp_path / "a" / "data", tmp_path / "store")
        shutil.rmtree(tmp_path / "a")
        code, out = cli(capsys, "verify", str(lock))
        tried = [tmp_path / "handed" / "data" / "train.npz", tmp_path / "a" / "data" / "train.npz"]
        assert code == 3
        assert "data drift: data/train.npz (train): locked sha256:" in out
        assert f"now missing (tried {tried[0]}, {tried[1]})" in out
        code, out = cli(
            capsys,
            "verify",
            str(lock),
            "--data-dir",
            str(tmp_path / "empty"),
            "--data-dir",
            str(tmp_path / "store"),
        )
        assert code == 0 and f"found at {tmp_path / 'store' / 'train.npz'}" in out
        monkeypatch.setenv("PTYCHO_DATA_DIRS", f"{tmp_path / 'empty'}:{tmp_path / 'store'}")
        assert cli(capsys, "verify", str(lock))[0] == 0

    def test_the_right_name_with_the_wrong_content_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Exit 3 naming the file found, the locked hash and the one found."""
        lock = make_project(tmp_path / "a")
        locked = read_lock(lock).inputs.data[0]
        (tmp_path / "other").mkdir()
        write_scan(tmp_path / "other" / "train.npz", gain=2.0)
        (tmp_path / "a" / "data" / "train.npz").unlink()
        code, out = cli(capsys, "verify", str(lock), "--data-dir", str(tmp_path / "other"))
        now = sha256(tmp_path / "other" / "train.npz")[:12]
        assert code == 3
        assert f"data drift: {tmp_path / 'other' / 'train.npz'} (train): locked" in out
        assert locked.sha256[:19] in out and f"now sha256:{now}" in out

    def test_content_decides_between_places(self, tmp_path: Path) -> None:
        """A changed file at the recorded place does not hide the locked one in a data folder."""
        lock_path = make_project(tmp_path / "a")
        shutil.copytree(tmp_path / "a" / "data", tmp_path / "store")
        write_scan(tmp_path / "a" / "data" / "train.npz", gain=2.0)
        lock = read_lock(lock_path)
        (found,) = locate_inputs(
            lock, lock_dir=str(tmp_path / "a"), data_dirs=[str(tmp_path / "store")]
        )
        assert found.intact and found.path == str(tmp_path / "store" / "train.npz")
        assert found.tried == (str(tmp_path / "a" / "data" / "train.npz"), found.path)

    def test_a_revision_1_lock_with_absolute_paths_still_verifies(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        old = absolute_revision_1(make_project(tmp_path / "a"), tmp_path / "old.lock.toml")
        assert read_lock(old).header.format_revision == 1
        assert "project_dir" not in old.read_text()
        code, out = cli(capsys, "verify", str(old))
        assert code == 0 and f"found at {tmp_path / 'a' / 'data' / 'train.npz'}" in out


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project (spec, data, lock, inference spec and lock) run in place, its run directory
    (runs/spec) and all, then moved to another folder: the original is gone."""
    root = tmp_path_factory.mktemp("travel")
    lock = make_project(root / "a")
    assert main(["run", str(lock)]) == 0
    (root / "a" / "infer.toml").write_text(INFER_SPEC)
    assert main(["compile", str(root / "a" / "infer.toml")]) == 0
    shutil.move(root / "a", root / "b")
    return root / "b"


class TestReplayElsewhere:
    def test_a_moved_lock_replays_bit_for_bit(self, moved: Path, tmp_path: Path) -> None:
        """No options: the data is found beside the lock; effective.toml says where."""
        assert main(["run", str(moved / "spec.lock.toml"), "--out", str(tmp_path / "run")]) == 0
        assert_same_results(moved / "runs" / "spec", tmp_path / "run")
        inputs = tomllib.loads((tmp_path / "run" / "effective.toml").read_text())["inputs"]
        assert inputs == {
            "train": {"requested": "data/train.npz", "effective": str(moved / "data" / "train.npz")}
        }

    def test_an_inference_lock_finds_its_bundle(self, moved: Path, tmp_path: Path) -> None:
        out = tmp_path / "infer"
        assert main(["run", str(moved / "infer.lock.toml"), "--out", str(out)]) == 0
        inputs = tomllib.loads((out / "effective.toml").read_text())["inputs"]
        assert inputs["bundle"]["effective"] == str(moved / "runs" / "spec" / "model.bundle")
        expected = array_hashes(moved / "runs" / "spec" / "reconstruction.npz")
        assert array_hashes(out / "reconstruction.npz")["object"] == expected["object"]

    def test_resume_after_the_run_directory_moved(
        self, moved: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The run directory moved away from the project: found with --data-dir."""
        run_dir = tmp_path / "elsewhere" / "run"
        shutil.copytree(moved / "runs" / "spec", run_dir)
        (run_dir / "COMPLETE").unlink()  # interrupted after training
        code, out = cli(capsys, "resume", str(run_dir))
        assert code == 3 and "now missing (tried" in out
        code, out = cli(capsys, "resume", str(run_dir), "--data-dir", str(moved / "data"))
        assert code == 0, out
        assert_same_results(moved / "runs" / "spec", run_dir)

    def test_a_revision_1_lock_replays(self, moved: Path, tmp_path: Path) -> None:
        """Absolute paths, as revision 1 wrote them, replay as they ran."""
        (tmp_path / "data").mkdir()
        shutil.copy(moved / "data" / "train.npz", tmp_path / "data")
        shutil.copy(moved / "spec.toml", tmp_path)
        assert main(["compile", str(tmp_path / "spec.toml")]) == 0
        old = absolute_revision_1(tmp_path / "spec.lock.toml", tmp_path / "old.lock.toml")
        assert main(["run", str(old), "--out", str(tmp_path / "run")]) == 0
        reference = array_hashes(moved / "runs" / "spec" / "reconstruction.npz")
        assert array_hashes(tmp_path / "run" / "reconstruction.npz") == reference
