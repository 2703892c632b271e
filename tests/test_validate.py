"""Tests for ptycho_spec.validate: the merged tree against the schema."""

from __future__ import annotations

import pytest
from strategies import layers_for

from ptycho_spec.errors import SpecError
from ptycho_spec.merge import merge
from ptycho_spec.validate import build_spec


def _errors(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as caught:
        build_spec(merge(layers_for(text, source="s.toml", **kwargs)))
    return [issue.render() for issue in caught.value.issues]


class TestBuildSpec:
    def test_valid_spec(self) -> None:
        """A valid tree builds the Spec with its values."""
        spec = build_spec(merge(layers_for('spec_version = 1\n[data]\nsource = "npz"\n')))
        assert spec.data.source == "npz"
        assert spec.model.N == "auto"

    def test_every_problem_at_once(self) -> None:
        """All problems of a spec are reported together, in line order."""
        text = "spec_version = 1\n[training]\nnepoch = 3\nbatch_size = 0\n[model]\nN = 100\ngridsize = true\n"
        assert _errors(text) == [
            's.toml:3: training.nepoch: unknown key; did you mean "nepochs"?',
            "s.toml:4: training.batch_size: must be ≥ 1 (got 0)",
            's.toml:6: model.N: must be one of 64, 128, 256 or "auto" (got 100)',
            "s.toml:7: model.gridsize: expected an integer (got true)",
        ]

    def test_unknown_key_without_a_close_match_lists_valid_keys(self) -> None:
        """Without a close match, the valid keys of the table are listed."""
        [message] = _errors("spec_version = 1\n[run]\nzzz = 1\n")
        assert message.startswith(
            "s.toml:3: run.zzz: unknown key; valid keys in [run]: name, task, seed, output_dir"
        )

    def test_unknown_section(self) -> None:
        """A misspelt section gets a did-you-mean."""
        assert _errors("spec_version = 1\n[trainig]\nnepochs = 3\n") == [
            's.toml:2: trainig: unknown key; did you mean "training"?'
        ]

    def test_alias_suggestion_names_the_canonical_key(self) -> None:
        """A near-miss of an alias suggests the canonical key."""
        [message] = _errors("spec_version = 1\n[training]\nepoch = 3\n")
        assert message.endswith('did you mean "nepochs"?')

    def test_table_for_a_setting(self) -> None:
        """A table where a value belongs says what was expected."""
        assert _errors("spec_version = 1\n[model.N]\nx = 1\n") == [
            's.toml:2: model.N: expected an integer or "auto" (got a table)'
        ]

    def test_setting_for_a_table(self) -> None:
        """A value where a table belongs is refused."""
        assert _errors("spec_version = 1\nmodel = 3\n") == [
            "s.toml:2: model: expected a table (got 3)"
        ]

    def test_file_keys_only_in_files(self) -> None:
        """spec_version cannot come from --set."""
        assert _errors("spec_version = 1\n", sets=["spec_version=1"]) == [
            "--set spec_version=1: spec_version: may only be set at the top of a spec file"
        ]

    def test_env_problems_name_the_variable(self) -> None:
        """A bad environment variable is located by its name."""
        assert _errors("spec_version = 1\n", environ={"PTYCHO__TRAINING__NEPOCHS": "x"}) == [
            'PTYCHO__TRAINING__NEPOCHS: training.nepochs: expected an integer (got "x")'
        ]

    def test_unknown_environment_variable(self) -> None:
        """A PTYCHO__ variable that names no setting is an error with a suggestion."""
        assert _errors("spec_version = 1\n", environ={"PTYCHO__TRAINING__NEPOCH": "3"}) == [
            'PTYCHO__TRAINING__NEPOCH: training.nepoch: unknown key; did you mean "nepochs"?'
        ]

    def test_non_finite_numbers(self) -> None:
        """inf and nan are refused by every float field."""
        [message] = _errors("spec_version = 1\n[training]\nlearning_rate = inf\n")
        assert message == "s.toml:3: training.learning_rate: must be a finite number (got inf)"
