"""``ptycho-spec run``: the three tasks, the run directory, the bundle, replay, bad data."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from runspec import write_npz_run, write_spec

from ptycho_spec.cli import main
from ptycho_spec.lock import read_lock
from ptycho_spec.vocabulary import logged_metrics
from runner.models.pinn import PtychoPINN
from runner.physics.scaling import ScalingConstants
from runner.run.execute import COLLAPSE_WARNING, UNCENTRED_HINT, flat_head_warning
from runner.train.bundle import MEMBERS, read_bundle

TRAIN_OUTPUTS = {
    "run.lock.toml",
    "effective.toml",
    "model.bundle",
    "loss.png",
    "metrics.json",
    "COMPLETE",
}
INFER_OUTPUTS = {"reconstruction.npz", "amplitude.png", "phase.png"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One train+infer run shared by the tests that only read its outputs."""
    folder = tmp_path_factory.mktemp("trained")
    spec = write_spec(folder, nepochs=2)
    assert main(["run", str(spec), "--out", str(folder / "run")]) == 0
    return folder / "run"


def infer_spec(folder: Path, trained: Path, *, stitch: str = "position") -> Path:
    """An inference spec for ``trained``'s bundle on the training run's test object."""
    spec = folder / "infer.toml"
    spec.write_text(
        'spec_version = 1\n[run]\ntask = "infer"\nseed = 3\n'
        '[data]\nsource = "simulate"\n'
        "[data.simulate]\nobject_size = 80\nscan_step_test = 8\nnphotons = 1e6\n"
        f'[inference]\nbundle = "{trained / "model.bundle"}"\nbatch_size = 4\n'
        f'stitch = "{stitch}"\n'
        '[execution]\naccelerator = "cpu"\nenable_progress_bar = false\n'
    )
    return spec


def arrays(path: Path) -> dict[str, str]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: hashlib.sha256(npz[k].tobytes()).hexdigest() for k in npz.files}


class TestTasks:
    def test_train_plus_infer_writes_everything(self, trained: Path) -> None:
        """train+infer writes the lock, bundle, reconstruction, pictures, metrics and logs."""
        names = {p.name for p in trained.iterdir()}
        assert TRAIN_OUTPUTS | INFER_OUTPUTS <= names
        assert (trained / "logs" / "metrics.csv").is_file()
        assert any((trained / "checkpoints").glob("*.ckpt"))
        metrics = json.loads((trained / "metrics.json").read_text())
        assert len(metrics["history"]) == 2 and "warnings" not in metrics
        assert set(metrics["reconstruction"]) == {"amplitude", "phase"}
        with np.load(trained / "reconstruction.npz") as rec:
            assert (
                rec["object"].dtype == np.complex64
                and rec["ground_truth"].shape == rec["object"].shape
            )
            np.testing.assert_allclose(rec["amplitude"], np.abs(rec["object"]), rtol=1e-6)

    def test_train_only(self, tmp_path: Path) -> None:
        """task = "train" trains and bundles but reconstructs nothing."""
        spec = write_spec(tmp_path, task="train")
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
        names = {p.name for p in (tmp_path / "run").iterdir()}
        assert TRAIN_OUTPUTS <= names and not (INFER_OUTPUTS & names)

    def test_infer_from_bundle(self, trained: Path, tmp_path: Path) -> None:
        """task = "infer" takes the model from the bundle and reconstructs the test data."""
        spec = infer_spec(tmp_path, trained)
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
        names = {p.name for p in (tmp_path / "run").iterdir()}
        assert INFER_OUTPUTS <= names and "model.bundle" not in names
        lock = read_lock(tmp_path / "run" / "run.lock.toml")
        trained_lock = read_lock(trained / "run.lock.toml")
        assert lock.resolved.canonical.model == trained_lock.resolved.canonical.model
        assert lock.provenance["model.N"].layer == "bundle"
        # Same weights, test object and batch size: the reconstruction equals the training run's.
        assert arrays(tmp_path / "run" / "reconstruction.npz") == arrays(
            trained / "reconstruction.npz"
        )

    def test_infer_with_refinement(self, trained: Path, tmp_path: Path) -> None:
        """An inference run refines the bundle's reconstruction against every pattern: the
        PINN's object is the training run's, and the refined one fits the patterns better."""
        spec = infer_spec(tmp_path, trained)
        spec.write_text(spec.read_text() + "[refine]\niterations = 4\nprobe = true\n")
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
        lock = read_lock(tmp_path / "run" / "run.lock.toml")
        assert lock.resolved.canonical.refine.iterations == 4
        nll = json.loads((tmp_path / "run" / "metrics.json").read_text())["refine"][
            "nll_per_iteration"
        ]
        assert len(nll) == 5 and nll[-1] < nll[0]
        with (
            np.load(tmp_path / "run" / "reconstruction.npz") as refined,
            np.load(trained / "reconstruction.npz") as pinn,
        ):
            np.testing.assert_array_equal(refined["pinn_object"], pinn["object"])
            assert refined["probe"].shape == (lock.resolved.canonical.model.N,) * 2

    def test_probe_stitching(self, trained: Path, tmp_path: Path) -> None:
        """inference.stitch = "probe" weights each patch pixel by the model's |M·P̂|²: the
        coverage becomes Σ|P̂|² instead of a count (0 where the disk probe is dark) and the
        object changes where patches meet."""
        spec = infer_spec(tmp_path, trained, stitch="probe")
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
        assert read_lock(
            tmp_path / "run" / "run.lock.toml"
        ).resolved.canonical.inference.stitch == ("probe")
        with (
            np.load(tmp_path / "run" / "reconstruction.npz") as probe,
            np.load(trained / "reconstruction.npz") as position,
        ):
            assert set(np.unique(position["weight"])) <= set(range(64))  # integer counts
            assert len(np.unique(probe["weight"])) > 64
            lit, covered = probe["weight"] > 0, position["weight"] > 0
            assert lit.sum() > covered.sum() / 2 and not (lit & ~covered).any()
            assert not np.allclose(probe["object"][lit], position["object"][lit])

    def test_a_flat_result_warns(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A run that ends on a flat object says so, on stderr and in metrics.json."""
        spec = write_spec(tmp_path, task="train")
        out = tmp_path / "run"
        assert main(["run", str(spec), "--out", str(out), "--set=training.learning_rate=1e-9"]) == 0
        assert f"warning: {COLLAPSE_WARNING}" in capsys.readouterr().err
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["warnings"] == [COLLAPSE_WARNING]
        assert metrics["flat_heads"] == ["amplitude", "phase"]

    def test_flat_head_advice(self) -> None:
        """One flat head is named; without centred inputs the advice adds the key that
        doubled the stable learning rate; nothing flat, no warning."""
        assert flat_head_warning((), centered=False) is None
        assert flat_head_warning(("amplitude", "phase"), centered=True) == COLLAPSE_WARNING
        phase = flat_head_warning(("phase",), centered=True)
        assert phase.startswith("training ended with a flat phase") and UNCENTRED_HINT not in phase
        assert flat_head_warning(("phase",), centered=False) == phase + UNCENTRED_HINT

    def test_infer_refuses_model_settings(
        self, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Model settings in an inference spec are refused: they come from the bundle."""
        spec = tmp_path / "infer.toml"
        spec.write_text(
            'spec_version = 1\n[run]\ntask = "infer"\n[data]\nsource = "simulate"\n'
            f'[model]\ngridsize = 2\n[inference]\nbundle = "{trained / "model.bundle"}"\n'
        )
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 2
        assert "model.gridsize" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


class TestLoggedMetrics:
    def test_the_module_logs_the_compilers_names(self, trained: Path) -> None:
        """The metrics the run logged are exactly those the compiler checks monitors against
        (a metric logged per step and per epoch appears as NAME_step and NAME_epoch)."""
        header = (trained / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
        names = {c.removesuffix("_step").removesuffix("_epoch") for c in header} - {"epoch", "step"}
        c = read_lock(trained / "run.lock.toml").resolved.canonical
        assert names == set(logged_metrics(c.training, c.model, validation=True))


class TestBundle:
    def test_round_trip(self, trained: Path) -> None:
        """The bundle loads (weights_only) into a fresh model whose predictions match."""
        bundle = read_bundle(trained / "model.bundle")
        lock = read_lock(trained / "run.lock.toml")
        assert bundle.lock_text == (trained / "run.lock.toml").read_text()
        c = lock.resolved.canonical
        net = PtychoPINN(
            model=c.model,
            probe=torch.ones(64, 64, dtype=torch.complex64),
            scaling=ScalingConstants(**bundle.scaling),
        )
        net.load_state_dict(bundle.state_dict, strict=True)
        again = PtychoPINN(
            model=c.model,
            probe=torch.ones(64, 64, dtype=torch.complex64),
            scaling=ScalingConstants(**bundle.scaling),
        )
        again.load_state_dict(net.state_dict(), strict=True)
        x = torch.rand(2, 1, 64, 64)
        torch.testing.assert_close(net.predict_object(x), again.predict_object(x))
        # the training set's input centering travels with the weights
        assert c.model.center_input
        assert float(bundle.state_dict["input_spread"]) > 0
        assert float(bundle.state_dict["input_mean"].abs().max()) > 0
        assert set(bundle.scaling) == {
            "input_scale",
            "photon_scale",
            "mean_photons",
            "initial_gain",
        }

    def test_member_order_and_timestamps(self, trained: Path) -> None:
        """Members are stored in a fixed order with the zip epoch as timestamp."""
        with zipfile.ZipFile(trained / "model.bundle") as zf:
            assert tuple(zf.namelist()) == MEMBERS
            assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


class TestReplay:
    def test_lock_replays_exactly(self, trained: Path, tmp_path: Path) -> None:
        """Running the written lock elsewhere reproduces reconstruction.npz and metrics.json."""
        assert main(["run", str(trained / "run.lock.toml"), "--out", str(tmp_path / "again")]) == 0
        assert arrays(tmp_path / "again" / "reconstruction.npz") == arrays(
            trained / "reconstruction.npz"
        )
        assert (tmp_path / "again" / "metrics.json").read_text() == (
            trained / "metrics.json"
        ).read_text()

    def test_set_cannot_change_a_lock(self, trained: Path, tmp_path: Path) -> None:
        """--set on a lock is a usage error: locks are changed by recompiling the spec."""
        args = [
            "run",
            str(trained / "run.lock.toml"),
            "--set",
            "training.nepochs=3",
            "--out",
            str(tmp_path / "x"),
        ]
        assert main(args) == 2


class TestRunDirectory:
    def test_completed_run_needs_force(
        self, trained: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A completed run directory is not overwritten without --force."""
        assert main(["run", str(trained / "run.lock.toml"), "--out", str(trained)]) == 2
        assert "--force" in capsys.readouterr().err

    def test_bad_data_exits_4_and_writes_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Non-finite diffraction data is exit code 4, and no run directory appears."""
        amplitude = np.ones((4, 64, 64), np.float32)
        amplitude[1, 3, 3] = np.nan
        spec = write_npz_run(tmp_path, name="bad", diff3d=amplitude)
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 4
        err = capsys.readouterr().err
        assert "bad.npz" in err and "diff3d" in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize(
        ("setting", "message"),
        [
            ("[model]\nprobe_mask = true\n", "is zero everywhere inside the probe mask"),
            ('[inference]\nstitch = "probe"\n', "is dark over the patch centre"),
        ],
        ids=["probe mask", "probe-weighted stitching"],
    )
    def test_probe_dark_where_the_model_looks(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
    ) -> None:
        """A probe lit only at its border is refused (exit 4, before the run directory) when
        the model masks it, or stitching weights by its centre."""
        r = np.hypot(*np.meshgrid(np.arange(64) - 32, np.arange(64) - 32))
        spec = write_npz_run(tmp_path, name="rim", probeGuess=(r > 30).astype(np.complex64))
        spec.write_text(spec.read_text() + setting)
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 4
        err = capsys.readouterr().err
        assert f"rim.npz[probeGuess]: {message}" in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()
