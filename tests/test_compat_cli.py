"""``ptycho_train`` / ``ptycho_inference``: PtychoPINN flags as ``--set`` overrides on a spec."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest

from ptycho_spec.bases import base_spec
from ptycho_spec.compat_cli import (
    INFERENCE_FLAGS,
    TRAIN_FLAGS,
    build_parser,
    inference_main,
    set_arguments,
    train_main,
    translate,
)
from ptycho_spec.compile import compile_spec

README = Path(__file__).resolve().parents[1] / "README.md"


def settings_of(argv: list[str], flags: Any = TRAIN_FLAGS) -> dict[str, Any]:
    parser = build_parser("ptycho_train", flags, config=flags is TRAIN_FLAGS)
    settings, _warnings = translate(parser.parse_args(argv), flags)
    return {s.key: s.value for s in settings}


REQUIRED = ["--output_dir", "out"]


class TestTranslate:
    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["--nepochs", "3"], {"training.nepochs": 3}),
            (["--max_epochs", "3"], {"training.nepochs": 3}),
            (["--n_groups", "64"], {"data.n_groups": 64}),
            (["--gridsize", "2"], {"model.gridsize": 2}),
            (["--batch_size", "4"], {"training.batch_size": 4}),
            (["--accelerator", "cpu"], {"execution.accelerator": "cpu"}),
            (["--torch-accelerator", "cuda"], {"execution.accelerator": "cuda"}),
            (["--num-workers", "2"], {"execution.num_workers": 2}),
            (["--torch-num-workers", "2"], {"execution.num_workers": 2}),
            (["--learning-rate", "5e-4"], {"training.learning_rate": 5e-4}),
            (["--torch-learning-rate", "5e-4"], {"training.learning_rate": 5e-4}),
            (["--logger", "tensorboard"], {"execution.logger": "tensorboard"}),
            (["--checkpoint-save-top-k", "-1"], {"execution.checkpoint_save_top_k": -1}),
            (
                ["--checkpoint-monitor", "train_loss"],
                {"execution.checkpoint_monitor": "train_loss"},
            ),
            (["--checkpoint-mode", "max"], {"execution.checkpoint_mode": "max"}),
            (["--early-stop-patience", "5"], {"execution.early_stop_patience": 5}),
            (["--torch-loss-mode", "mae"], {"training.loss": "mae"}),
            (["--torch-plateau-patience", "3"], {"training.plateau_patience": 3}),
            (["--measurement-domain", "count_intensity"], {"data.measurement": "counts"}),
            (["--backend", "pytorch"], {}),
        ],
    )
    def test_flag_sets_key(self, argv: list[str], expected: dict[str, Any]) -> None:
        """Each flag becomes exactly the spec setting it stands for."""
        assert {
            k: v for k, v in settings_of([*REQUIRED, *argv]).items() if k != "run.output_dir"
        } == expected

    @pytest.mark.parametrize(
        ("argv", "key", "value"),
        [
            (["--deterministic"], "execution.deterministic", True),
            (["--no-deterministic"], "execution.deterministic", False),
            (["--no-torch-deterministic"], "execution.deterministic", False),
            (["--torch-enable-checkpointing"], "execution.enable_checkpointing", True),
            (["--no-torch-enable-checkpointing"], "execution.enable_checkpointing", False),
            (["--disable-checkpointing"], "execution.enable_checkpointing", False),
            (["--quiet"], "execution.enable_progress_bar", False),
            (["--no-quiet"], "execution.enable_progress_bar", True),
            (["--no-probe-mask"], "model.probe_mask", False),
            (["--probe_trainable"], "model.probe_trainable", True),
        ],
    )
    def test_booleans_turn_both_ways(self, argv: list[str], key: str, value: bool) -> None:
        """Every switch can be set and unset (PtychoPINN's --torch-deterministic could not)."""
        assert settings_of([*REQUIRED, *argv])[key] is value

    def test_test_file_also_reconstructs(self) -> None:
        """A test file makes the task train+infer, as ptycho_train evaluates it."""
        found = settings_of([*REQUIRED, "--test_data_file", "t.npz"])
        assert found["run.task"] == "train+infer" and Path(found["data.test_file"]).is_absolute()

    def test_model_path_folder_means_its_bundle(self, tmp_path: Path) -> None:
        """--model_path may name a run directory: its model.bundle is meant."""
        argv = ["--model_path", str(tmp_path), "--test_data", "t.npz", *REQUIRED]
        assert settings_of(argv, INFERENCE_FLAGS)["inference.bundle"] == str(
            tmp_path / "model.bundle"
        )

    @pytest.mark.parametrize(("flag", "stitch"), [("uniform", "position"), ("probe", "probe")])
    def test_patch_weighting(self, flag: str, stitch: str) -> None:
        """PtychoPINN's --patch-weighting choices are the two inference.stitch weightings."""
        argv = ["--model_path", "m", "--test_data", "t.npz", *REQUIRED, "--patch-weighting", flag]
        assert settings_of(argv, INFERENCE_FLAGS)["inference.stitch"] == stitch

    @pytest.mark.parametrize(
        ("argv", "replacement"),
        [
            (["--n_images", "8"], "--n_groups (data.n_groups)"),
            (["--device", "cpu"], "--accelerator (execution.accelerator)"),
            (["--disable_mlflow"], "--logger none (execution.logger)"),
        ],
    )
    def test_deprecated_flags_warn(self, argv: list[str], replacement: str) -> None:
        """Deprecated flags still work and name the key replacing them."""
        parser = build_parser("ptycho_train", TRAIN_FLAGS, config=True)
        _settings, warnings = translate(parser.parse_args([*REQUIRED, *argv]), TRAIN_FLAGS)
        assert len(warnings) == 1 and replacement in warnings[0]

    def test_set_arguments_are_toml(self) -> None:
        """Values are written in TOML syntax, so paths and strings survive --set."""
        found = settings_of([*REQUIRED, "--train_data_file", "a b.npz", "--nepochs", "2"])
        sets = set_arguments([*(_setting(k, v) for k, v in found.items())])
        for entry in sets:
            key, value = entry.split("=", 1)
            assert tomllib.loads(f"v = {value}")["v"] == found[key]
            assert entry.endswith(" # --x")


def _setting(key: str, value: Any) -> Any:
    from ptycho_spec.compat_cli import Setting

    return Setting(key=key, value=value, flag="--x")


class TestRefusals:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--device", "cuda", "--accelerator", "cpu"], "--accelerator and --device disagree"),
            (["--nepochs", "2", "--max_epochs", "3"], "disagree on training.nepochs"),
            (["--disable_mlflow", "--logger", "csv"], "disagree on execution.logger"),
            (["--probe-mask-sigma", "2"], "--probe-mask-sigma: no spec equivalent"),
            (["--profile", "ci"], "--profile: no spec equivalent: ptycho-spec has one scaling"),
            (["--torch-recon-log-stitch"], "no spec equivalent"),
            (["--backend", "tensorflow"], "--backend tensorflow: no spec equivalent"),
        ],
    )
    def test_usage_errors(
        self, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Conflicting and untranslatable flags exit 2 with one line saying why."""
        assert train_main([*REQUIRED, *argv, "--print-spec"]) == 2
        assert message in capsys.readouterr().err

    def test_inference_refusals(self, capsys: pytest.CaptureFixture[str]) -> None:
        """ptycho_inference refuses what its model bundle decides, and unknown weightings."""
        argv = ["--model_path", "m", "--test_data", "t.npz", *REQUIRED, "--print-spec"]
        assert inference_main([*argv, "--probe-mask"]) == 2
        assert "model settings come from the model bundle" in capsys.readouterr().err
        assert inference_main([*argv, "--patch-weighting", "barycentric"]) == 2

    def test_unknown_flag(self) -> None:
        """A flag nobody knows is refused by the parser (exit 2), never dropped."""
        with pytest.raises(SystemExit) as caught:
            train_main([*REQUIRED, "--nepoch", "3"])
        assert caught.value.code == 2


class TestPrintSpec:
    def test_same_run_as_the_command(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_scan: Any, monkeypatch: Any
    ) -> None:
        """The printed spec compiles to the run the command would run."""
        from runner.data.npz import write_npz

        write_npz(tiny_scan, tmp_path / "train.npz", nphotons=1e6)
        monkeypatch.chdir(tmp_path)
        argv = [
            "--train_data_file",
            "train.npz",
            "--output_dir",
            "out",
            "--nepochs",
            "2",
            "--n_images",
            "25",
            "--quiet",
            "--device",
            "cpu",
            "--set",
            "run.seed=4",
        ]
        assert train_main([*argv, "--print-spec"]) == 0
        (tmp_path / "printed.toml").write_text(capsys.readouterr().out)
        printed = compile_spec(str(tmp_path / "printed.toml")).resolved
        parser = build_parser("ptycho_train", TRAIN_FLAGS, config=True)
        settings, _ = translate(parser.parse_args(argv), TRAIN_FLAGS)
        sets = [*set_arguments(settings), "run.seed=4"]
        direct = compile_spec(str(base_spec("ptycho_train")), sets).resolved
        # the printed spec's lock names files below its folder relative to it
        data = printed.canonical.data
        train_file = str(tmp_path / data.train_file)
        assert attrs.evolve(data, train_file=train_file) == direct.canonical.data
        assert printed.canonical.training == direct.canonical.training
        assert printed.execution == direct.execution
        assert printed.canonical.run.output_dir == "out"

    def test_ptychopinn_yaml_config(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--config takes a PtychoPINN YAML config; flags override its values."""
        (tmp_path / "c.yaml").write_text(
            "model:\n  gridsize: 2\ntrain_data_file: data/train.npz\nnepochs: 50\n"
        )
        argv = ["--config", str(tmp_path / "c.yaml"), "--nepochs", "3", *REQUIRED, "--print-spec"]
        assert train_main(argv) == 0
        spec = tomllib.loads(capsys.readouterr().out)
        assert spec["training"]["nepochs"] == 3 and spec["model"]["gridsize"] == 2
        assert spec["data"]["train_file"] == str(tmp_path / "data" / "train.npz")


class TestRun:
    def test_train_then_infer(
        self, tmp_path: Path, tiny_scan: Any, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An old training command and an old inference command run as specs."""
        from runner.data.npz import write_npz

        write_npz(tiny_scan, tmp_path / "train.npz", nphotons=1e6)
        out = tmp_path / "run"
        code = train_main(
            [
                "--train_data_file",
                str(tmp_path / "train.npz"),
                "--test_data_file",
                str(tmp_path / "train.npz"),
                "--output_dir",
                str(out),
                "--nepochs",
                "1",
                "--n_groups",
                "25",
                "--batch_size",
                "8",
                "--n_filters_scale",
                "1",
                "--accelerator",
                "cpu",
                "--quiet",
            ]
        )
        assert code == 0 and (out / "model.bundle").is_file()
        assert (out / "reconstruction.npz").is_file()
        lock = (out / "run.lock.toml").read_text()
        # the provenance names the flag that set each key
        assert re.search(
            r'"training.nepochs" = \{ detail = "--set training.nepochs=1 # --nepochs"', lock
        )
        code = inference_main(
            [
                "--model_path",
                str(out),
                "--test_data",
                str(tmp_path / "train.npz"),
                "--output_dir",
                str(tmp_path / "inferred"),
                "--n_images",
                "9",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        assert code == 0 and (tmp_path / "inferred" / "reconstruction.npz").is_file()
        assert "--n_images is deprecated" in capsys.readouterr().err

    def test_bad_data_exits_4(self, tmp_path: Path) -> None:
        """Exit codes are ptycho-spec's: a broken data file is 4."""
        (tmp_path / "train.npz").write_bytes(b"not an npz")
        argv = [
            "--train_data_file",
            str(tmp_path / "train.npz"),
            "--output_dir",
            str(tmp_path / "o"),
        ]
        assert train_main(argv) == 4


class TestReadme:
    def test_every_flag_is_documented(self) -> None:
        """The README's flag table names every flag the two commands accept."""
        text = README.read_text()
        names = {name for flag in (*TRAIN_FLAGS, *INFERENCE_FLAGS) for name in flag.names}
        missing = sorted(name for name in names if f"`{name}" not in text)
        assert not missing, f"README lacks {missing}"
