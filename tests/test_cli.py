"""Tests for ptycho_spec.cli: subcommands, exit codes, output streams, imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from strategies import toml, write_scan_npz

from ptycho_spec.cli import COMMANDS, main

ROOT = Path(__file__).parent.parent
QUICKSTART = str(ROOT / "examples" / "quickstart.toml")
SIMULATED = {"data": {"source": "simulate", "n_groups": "all"}, "run": {"task": "train"}}


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(toml(SIMULATED))
    return path


class TestMain:
    def test_reserved_and_present_commands(self) -> None:
        """The subcommands of this package are registered once each."""
        names = [c.name for c in COMMANDS]
        assert names[:8] == [
            "validate",
            "compile",
            "explain",
            "diff",
            "schema",
            "migrate",
            "run",
            "export-npz",
        ]
        assert len(set(names)) == len(names)

    def test_usage_error_exits_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """argparse refuses unknown commands with exit code 2."""
        with pytest.raises(SystemExit) as caught:
            main(["frobnicate"])
        assert caught.value.code == 2


class TestValidate:
    def test_ok(self, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid spec prints ok and exits 0."""
        assert main(["validate", str(spec)]) == 0
        assert capsys.readouterr().out == f"ok: {spec}\n"

    def test_every_problem_one_line_each(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An invalid spec exits 2 with one FILE:LINE diagnostic per problem, no traceback:
        field errors and cross-field rule errors in one pass."""
        bad = tmp_path / "bad.toml"
        bad.write_text('spec_version = 1\n[training]\nnepoch = 3\nbatch_size = "x"\n')
        assert main(["validate", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [
            f'{bad}: data.source: is required: "npz", "simulate" or "ptychodus"',
            f'{bad}:3: training.nepoch: unknown key; did you mean "nepochs"?',
            f'{bad}:4: training.batch_size: expected an integer (got "x")',
        ]

    def test_warnings_go_to_stderr(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Deprecation warnings are printed to stderr and do not fail validation."""
        path = tmp_path / "w.toml"
        path.write_text(toml({**SIMULATED, "training": {"epochs": 2}}))
        assert main(["validate", str(path)]) == 0
        assert capsys.readouterr().err.startswith(f"warning: {path}:")

    @pytest.mark.parametrize(
        "error",
        ['batch_size = "x"', "batch_size = 4"],
        ids=["field error", "rule error (no data.source)"],
    )
    def test_warnings_beside_errors(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], error: str
    ) -> None:
        """A spec with errors still shows its deprecation warnings, after the errors."""
        bad = tmp_path / "bad.toml"
        bad.write_text(f"spec_version = 1\n[training]\nepochs = 3\n{error}\n")
        assert main(["validate", str(bad)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines[-1] == (
            f"warning: {bad}:3: training.epochs: epochs is a deprecated alias; use training.nepochs"
        )
        assert lines[0].startswith(f"{bad}") and len(lines) >= 2

    def test_several_specs(self, spec: Path, tmp_path: Path) -> None:
        """Every spec is checked; one bad spec makes the exit code 2."""
        (tmp_path / "bad.toml").write_text("[run]\n")
        assert main(["validate", str(spec), str(tmp_path / "bad.toml")]) == 2


class TestCompile:
    def test_default_output_beside_the_spec(
        self, spec: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The lock is written as <stem>.lock.toml next to the spec."""
        assert main(["compile", str(spec)]) == 0
        assert (spec.parent / "s.lock.toml").exists()
        assert capsys.readouterr().err == f"wrote {spec.parent / 's.lock.toml'}\n"

    def test_stdout(self, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """-o - prints the lock."""
        assert main(["compile", str(spec), "-o", "-", "--set", "training.nepochs=3"]) == 0
        assert "nepochs = 3" in capsys.readouterr().out

    def test_data_error_exits_4(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Broken data give exit code 4 and a one-line message naming file and key."""
        write_scan_npz(tmp_path / "d.npz", n_patterns=4)
        path = tmp_path / "n.toml"
        path.write_text(
            toml(
                {
                    "run": {"task": "train"},
                    "data": {
                        "source": "npz",
                        "train_file": "d.npz",
                        "n_groups": "all",
                        "measurement": "counts",
                    },
                }
            )
        )
        assert main(["compile", str(path)]) == 4
        assert capsys.readouterr().err.startswith(
            f'error: {tmp_path / "d.npz"}: data.measurement = "counts"'
        )


class TestExplain:
    def test_layers_in_order(self, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """explain shows the final value and each layer that set it."""
        assert main(["explain", str(spec), "training.nepochs", "--set", "training.nepochs=4"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "training.nepochs = 4"
        assert [line.split()[0] for line in lines[1:]] == ["default", "set"]

    def test_resolved_value(self, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A resolved value shows where it came from."""
        assert main(["explain", str(spec), "model.N"]) == 0
        assert capsys.readouterr().out.splitlines()[-1].split()[0] == "derived"

    def test_unknown_key(self, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown key exits 2 with a suggestion."""
        assert main(["explain", str(spec), "model.n"]) == 2
        assert 'did you mean "model.N"?' in capsys.readouterr().err


class TestDiff:
    def test_same_run(self, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A spec and its own lock are the same run: exit 0."""
        main(["compile", str(spec)])
        assert main(["diff", str(spec), str(spec.parent / "s.lock.toml")]) == 0
        assert capsys.readouterr().out.startswith("same run (sha256:")

    def test_differences(
        self, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Differing settings are listed key by key; exit 1."""
        other = tmp_path / "o.toml"
        other.write_text(toml({**SIMULATED, "training": {"nepochs": 3}}))
        assert main(["diff", str(spec), str(other)]) == 1
        assert "training.nepochs: 50 → 3" in capsys.readouterr().out.splitlines()

    def test_edited_lock_exits_3(self, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A lock edited after it was written fails verification: exit 3."""
        main(["compile", str(spec)])
        lock = spec.parent / "s.lock.toml"
        lock.write_text(lock.read_text().replace("nepochs = 50", "nepochs = 5"))
        assert main(["diff", str(spec), str(lock)]) == 3
        assert "changed: [canonical]" in capsys.readouterr().err


class TestSchema:
    def test_json(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The JSON Schema is printed."""
        assert main(["schema"]) == 0
        assert json.loads(capsys.readouterr().out)["additionalProperties"] is False

    def test_markdown(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The field reference is printed as Markdown."""
        assert main(["schema", "--format", "markdown"]) == 0
        assert "## [training]" in capsys.readouterr().out


class TestMigrate:
    def test_yaml(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A PtychoPINN YAML is printed as spec v1 TOML."""
        (tmp_path / "c.yaml").write_text("nepochs: 4\n")
        assert main(["migrate", str(tmp_path / "c.yaml")]) == 0
        assert "[training]\nnepochs = 4\n" in capsys.readouterr().out

    def test_unreadable(self, tmp_path: Path) -> None:
        """A missing file is a usage error."""
        assert main(["migrate", str(tmp_path / "nope.yaml")]) == 2


_NO_TORCH = """
import sys
from ptycho_spec.cli import main
rc = main({argv!r})
heavy = sorted(m for m in ("torch", "lightning", "pytorch_lightning") if m in sys.modules)
print("HEAVY", heavy)
sys.exit(rc)
"""


@pytest.mark.parametrize("command", ["validate", "compile"])
def test_no_torch_import(command: str, tmp_path: Path) -> None:
    """validate and compile never import torch or lightning (checked in a fresh interpreter)."""
    argv = [command, QUICKSTART] + (
        ["-o", str(tmp_path / "q.lock.toml")] if command == "compile" else []
    )
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH.format(argv=argv)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout


def test_console_script() -> None:
    """The installed ptycho-spec command runs."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ptycho-spec"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.startswith("ptycho-spec ")
