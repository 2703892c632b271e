"""Tests for ptycho_spec.compile: validate and compile real files end to end."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from strategies import toml, write_scan_npz

from ptycho_spec.cli import main
from ptycho_spec.compile import compile_spec, validate_spec
from ptycho_spec.errors import DataError, SpecError
from ptycho_spec.formats.bundle import dumps_bundle_file
from ptycho_spec.lock import dumps_lock

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A spec in specs/ extending a base in bases/ that names data in data/."""
    for name in ("bases", "specs", "data"):
        (tmp_path / name).mkdir()
    write_scan_npz(tmp_path / "data" / "train.npz", n_patterns=40, counts=True)
    write_scan_npz(tmp_path / "data" / "test.npz", n_patterns=10, counts=True)
    base = {"data": {"source": "npz", "train_file": "../data/train.npz", "n_groups": "all"}}
    (tmp_path / "bases" / "base.toml").write_text(toml(base))
    spec = {
        "extends": ["../bases/base.toml"],
        "data": {"test_file": "../data/test.npz"},
        "training": {"nepochs": 2},
    }
    (tmp_path / "specs" / "run.toml").write_text(toml(spec))
    return tmp_path


class TestCompileSpec:
    def test_paths_resolve_against_the_file_that_set_them(self, project: Path) -> None:
        """The base's data path is relative to the base, the spec's to the spec."""
        data = compile_spec(str(project / "specs" / "run.toml"), environ={}).resolved.canonical.data
        assert data.train_file == str(project / "data" / "train.npz")
        assert data.test_file == str(project / "data" / "test.npz")

    def test_inputs_are_hashed(self, project: Path) -> None:
        """Every spec file and data file is recorded with its hash and arrays."""
        lock = compile_spec(str(project / "specs" / "run.toml"), environ={})
        assert [Path(s.path).name for s in lock.inputs.specs] == ["base.toml", "run.toml"]
        assert [(d.role, d.arrays["diff3d"].shape) for d in lock.inputs.data] == [
            ("train", (40, 64, 64)),
            ("test", (10, 64, 64)),
        ]

    def test_resolved_from_the_data(self, project: Path) -> None:
        """N, measurement and the photon count come from the training file."""
        lock = compile_spec(str(project / "specs" / "run.toml"), environ={})
        canonical = lock.resolved.canonical
        assert (canonical.model.N, canonical.data.measurement, canonical.data.n_groups) == (
            64,
            "counts",
            40,
        )
        assert lock.provenance["training.nphotons"].file == str(project / "data" / "train.npz")

    def test_byte_identical(self, project: Path) -> None:
        """Compiling the same inputs twice gives the same bytes."""
        path = str(project / "specs" / "run.toml")
        assert dumps_lock(compile_spec(path, environ={})) == dumps_lock(
            compile_spec(path, environ={})
        )

    def test_environment_and_set_layers(self, project: Path) -> None:
        """PTYCHO__ variables and --set arguments override the files, --set last."""
        lock = compile_spec(
            str(project / "specs" / "run.toml"),
            ["training.nepochs=7"],
            {"PTYCHO__TRAINING__NEPOCHS": "5", "PTYCHO__RUN__SEED": "3"},
        )
        assert (lock.resolved.canonical.training.nepochs, lock.resolved.canonical.run.seed) == (
            7,
            3,
        )
        assert lock.provenance["run.seed"].detail == "PTYCHO__RUN__SEED"

    def test_set_refinement(self, project: Path) -> None:
        """--set turns refinement on; the lock records the argument."""
        lock = compile_spec(
            str(project / "specs" / "run.toml"),
            ["refine.iterations=3", "refine.positions=true", "inference.align_patches=false"],
            {},
        )
        canonical = lock.resolved.canonical
        assert (canonical.refine.iterations, canonical.refine.positions) == (3, True)
        assert canonical.inference.align_patches is False
        assert lock.provenance["refine.iterations"].layer == "set"

    def test_missing_data_file(self, project: Path) -> None:
        """A data file that does not exist is reported at the line that names it."""
        (project / "data" / "test.npz").unlink()
        with pytest.raises(SpecError) as caught:
            compile_spec(str(project / "specs" / "run.toml"), environ={})
        assert (
            caught.value.issues[0]
            .render()
            .endswith(f"run.toml:7: data.test_file: no such file: {project / 'data' / 'test.npz'}")
        )

    def test_bad_data_is_a_data_error(self, project: Path) -> None:
        """A broken data file gives exit code 4."""
        (project / "data" / "test.npz").write_text("not a zip")
        with pytest.raises(DataError) as caught:
            compile_spec(str(project / "specs" / "run.toml"), environ={})
        assert caught.value.exit_code == 4


class TestSimulatedWithProbeFile:
    def test_n_from_the_probe_file(self, tmp_path: Path) -> None:
        """A simulation probe file sets N and is hashed as an input."""
        np.savez(tmp_path / "probe.npz", probeGuess=np.ones((128, 128), np.complex64))
        spec = {
            "run": {"task": "train"},
            "data": {
                "source": "simulate",
                "n_groups": "all",
                "simulate": {"probe": "probe.npz", "object_size": 140},
            },
        }
        (tmp_path / "s.toml").write_text(toml(spec))
        lock = compile_spec(str(tmp_path / "s.toml"), environ={})
        assert lock.resolved.canonical.model.N == 128
        assert lock.provenance["model.N"].file == "probe.npz"
        assert [d.role for d in lock.inputs.data] == ["probe"]


def _infer_from_bundle(project: Path) -> Path:
    """A bundle (any weight bytes) of the project's training lock and an infer spec using it."""
    trained = compile_spec(str(project / "specs" / "run.toml"), environ={})
    (project / "model.bundle").write_bytes(
        dumps_bundle_file(
            weights=b"weights",
            lock_text=dumps_lock(trained),
            scaling={},
            model={},
            tool_version="test",
        )
    )
    spec = {
        "run": {"task": "infer"},
        "data": {"source": "npz", "test_file": "data/test.npz"},
        "inference": {"bundle": "model.bundle"},
    }
    (project / "infer.toml").write_text(toml(spec))
    return project / "infer.toml"


class TestInferFromBundle:
    def test_compiles_against_the_bundle(self, project: Path) -> None:
        """An inference spec takes its model from a bundle's lock and checks the test data."""
        trained = compile_spec(str(project / "specs" / "run.toml"), environ={})
        lock = compile_spec(str(_infer_from_bundle(project)), environ={})
        assert lock.resolved.canonical.model == trained.resolved.canonical.model
        assert lock.resolved.canonical.training == trained.resolved.canonical.training
        assert [d.role for d in lock.inputs.data] == ["test", "bundle"]

    def test_altered_weights_are_refused(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """compile refuses a bundle whose weights no longer match its manifest (exit 4), as
        run does, instead of locking it."""
        spec = _infer_from_bundle(project)
        path = project / "model.bundle"
        with zipfile.ZipFile(path) as archive:
            members = {i.filename: archive.read(i) for i in archive.infolist()}
        members["state_dict.pt"] = b"weighta"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        assert main(["compile", str(spec), "-o", str(project / "x.lock.toml")]) == 4
        assert "state_dict.pt]: member does not match the manifest's sha256" in (
            capsys.readouterr().err
        )
        assert not (project / "x.lock.toml").exists()


class TestValidateSpec:
    def test_opens_no_data(self, project: Path) -> None:
        """validate checks a spec whose data files do not exist."""
        for name in ("train.npz", "test.npz"):
            (project / "data" / name).unlink()
        checked = validate_spec(str(project / "specs" / "run.toml"), environ={})
        assert checked.spec.training.nepochs == 2

    def test_field_and_rule_errors_in_one_pass(self, tmp_path: Path) -> None:
        """Field errors and the cross-field rules' errors come together; a rule that would
        judge a setting which failed its own check (it holds its default) stays silent."""
        spec = tmp_path / "s.toml"
        spec.write_text(
            toml(
                {
                    "data": {"source": "npz", "n_groups": -3},
                    "model": {"gridsize": "two"},
                    "training": {"scheduler": "plateau", "exponential_gamma": 0.5},
                    "execution": {"num_workers": 0, "persistent_workers": True},
                }
            )
        )
        with pytest.raises(SpecError) as caught:
            validate_spec(str(spec), environ={})
        assert {(i.path, i.message.split(" (")[0]) for i in caught.value.issues} == {
            ("data.n_groups", "must be ≥ 1"),
            ("model.gridsize", "expected an integer"),
            ("data.train_file", "is required to train"),
            ("data.test_file", "is required for inference"),
            ("training.exponential_gamma", "has no effect here; remove it"),
            ("execution.persistent_workers", "needs worker processes"),
        }
        # data.neighbor_count would be judged against the default gridsize 1: not reported
        spec.write_text(
            toml({"data": {"source": "simulate", "neighbor_count": 4}, "model": {"gridsize": 0}})
        )
        with pytest.raises(SpecError) as caught:
            validate_spec(str(spec), environ={})
        assert [i.path for i in caught.value.issues] == ["model.gridsize"]

    def test_refine_and_align_fields_are_checked(self, tmp_path: Path) -> None:
        """Wrong types and bounds in [refine] and inference.align_patches are located."""
        spec = tmp_path / "s.toml"
        spec.write_text(
            toml(
                {
                    "data": {"source": "simulate"},
                    "inference": {"align_patches": "yes"},
                    "refine": {"iterations": -1, "probe": 1, "batch_size": 0},
                }
            )
        )
        with pytest.raises(SpecError) as caught:
            validate_spec(str(spec), environ={})
        assert [i.render() for i in caught.value.issues] == [
            f'{spec}:7: inference.align_patches: expected true or false (got "yes")',
            f"{spec}:10: refine.iterations: must be ≥ 0 (got -1)",
            f"{spec}:11: refine.probe: expected true or false (got 1)",
            f"{spec}:12: refine.batch_size: must be ≥ 1 (got 0)",
        ]

    def test_warnings_are_returned(self, tmp_path: Path) -> None:
        """Deprecations come back as warnings; nothing is printed."""
        (tmp_path / "s.toml").write_text(
            toml({"data": {"source": "simulate"}, "training": {"epochs": 2}})
        )
        assert [w.path for w in validate_spec(str(tmp_path / "s.toml"), environ={}).warnings] == [
            "training.epochs"
        ]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.stem)
def test_examples_validate(path: Path) -> None:
    """Every example spec validates."""
    validate_spec(str(path), environ={})


def test_quickstart_compiles(tmp_path: Path) -> None:
    """The quickstart compiles on this machine with no data files."""
    lock = compile_spec(str(EXAMPLES / "quickstart.toml"), environ={})
    assert lock.resolved.execution.accelerator == "cpu"
    assert lock.resolved.canonical.run.output_dir == "runs/quickstart"
