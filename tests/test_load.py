"""Tests for ptycho_spec.load: files, extends, environment variables and --set."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptycho_spec.errors import Origin, SpecError, UsageError
from ptycho_spec.load import (
    default_layer,
    env_layer,
    file_layers,
    load_layers,
    loads_spec,
    migrated_text,
    parse_value,
    read_spec,
    set_layer,
)


class TestLoadsSpec:
    def test_origins_carry_lines(self) -> None:
        """Every key's origin names the file and the line that set it."""
        layer = loads_spec("spec_version = 1\n\n[training]\nnepochs = 3\n", source="s.toml")
        assert layer.origins[("training", "nepochs")] == Origin("spec", file="s.toml", line=4)
        assert layer.tree == {"training": {"nepochs": 3}}

    def test_alias_is_rewritten_with_a_warning(self) -> None:
        """A deprecated key becomes its canonical name and is reported with its line."""
        layer = loads_spec("spec_version = 1\n[training]\nepochs = 3\n", source="s.toml")
        assert layer.tree == {"training": {"nepochs": 3}}
        [warning] = layer.warnings
        assert (
            warning.render()
            == "s.toml:3: training.epochs: epochs is a deprecated alias; use training.nepochs"
        )

    def test_value_alias_is_rewritten(self) -> None:
        """A deprecated value becomes its canonical value, with a warning."""
        layer = loads_spec('spec_version = 1\n[model]\namp_activation = "swish"\n', source="s.toml")
        assert layer.tree["model"]["amp_activation"] == "silu"
        assert 'use "silu"' in layer.warnings[0].message

    def test_alias_and_canonical_in_one_layer(self) -> None:
        """Setting a key and its alias in one file is an error naming both."""
        layer = loads_spec("spec_version = 1\n[data]\nK = 4\nneighbor_count = 5\n", source="s.toml")
        [issue] = layer.issues
        assert (
            issue.render()
            == "s.toml:3: data.neighbor_count: both neighbor_count and its deprecated alias K are set; keep neighbor_count"
        )

    def test_spec_version_is_required(self) -> None:
        """A spec without spec_version points at `ptycho-spec migrate`."""
        with pytest.raises(SpecError, match="spec_version is required; run `ptycho-spec migrate`"):
            loads_spec("[run]\nseed = 1\n", source="s.toml")

    def test_future_spec_version(self) -> None:
        """A newer spec_version is refused with the supported range."""
        with pytest.raises(SpecError, match="unsupported spec_version 2"):
            loads_spec("spec_version = 2\n", source="s.toml")

    def test_syntax_error_has_a_line(self) -> None:
        """A TOML syntax error is reported as FILE:LINE."""
        with pytest.raises(SpecError) as caught:
            loads_spec("spec_version = 1\n[run]\nseed = \n", source="s.toml")
        assert caught.value.issues[0].render().startswith("s.toml:3: invalid TOML: ")

    def test_extends_must_be_paths(self) -> None:
        """extends is an array of strings."""
        layer = loads_spec("spec_version = 1\nextends = [1]\n", source="s.toml")
        assert layer.issues[0].path == "extends"

    def test_yaml_is_version_0(self) -> None:
        """A YAML file is a PtychoPINN config, migrated with notes as warnings."""
        layer = loads_spec("nepochs: 3\nbackend: pytorch\n", source="c.yaml")
        assert layer.tree["training"] == {"nepochs": 3}
        assert any("backend" in w.message for w in layer.warnings)


class TestDefaultLayer:
    def test_holds_every_section(self) -> None:
        """The defaults layer sets every section and records them as defaults."""
        layer = default_layer()
        assert set(layer.tree) == {
            "run",
            "data",
            "model",
            "training",
            "inference",
            "refine",
            "execution",
        }
        assert layer.origins[("model", "N")] == Origin("default")


class TestEnvLayer:
    def test_nested_and_case_insensitive(self) -> None:
        """PTYCHO__SECTION__FIELD matches fields case-insensitively, nested sections too."""
        layer = env_layer(
            {"PTYCHO__DATA__SIMULATE__NPHOTONS": "1e5", "PTYCHO__MODEL__N": "128", "HOME": "/x"}
        )
        assert layer is not None
        assert layer.tree == {"data": {"simulate": {"nphotons": 1e5}}, "model": {"N": 128}}
        assert layer.origins[("model", "N")] == Origin("env", detail="PTYCHO__MODEL__N")

    def test_values_fall_back_to_strings(self) -> None:
        """A value that is not TOML is taken as a bare string."""
        layer = env_layer({"PTYCHO__RUN__NAME": "my run"})
        assert layer is not None and layer.tree == {"run": {"name": "my run"}}

    def test_unknown_names_stay_for_validation(self) -> None:
        """An unknown name becomes a key path that validation reports."""
        layer = env_layer({"PTYCHO__TRAINING__NEPOCH": "3"})
        assert layer is not None and layer.tree == {"training": {"nepoch": 3}}

    def test_malformed_name(self) -> None:
        """Empty parts are a usage error."""
        with pytest.raises(UsageError):
            env_layer({"PTYCHO__TRAINING____X": "3"})

    def test_no_variables_no_layer(self) -> None:
        """Without PTYCHO__ variables there is no layer."""
        assert env_layer({"PATH": "/bin"}) is None


class TestSetLayer:
    def test_dotted_keys_and_values(self) -> None:
        """--set takes a TOML key and value; the origin names the argument."""
        layer = set_layer(["training.nepochs=5", 'run.name="x y"'])
        assert layer is not None
        assert layer.tree == {"training": {"nepochs": 5}, "run": {"name": "x y"}}
        assert layer.origins[("training", "nepochs")].detail == "--set training.nepochs=5"

    def test_repeated_key(self) -> None:
        """The same key twice is an error naming the first argument."""
        layer = set_layer(["training.nepochs=5", "training.nepochs=6"])
        assert (
            layer is not None and "also set by --set training.nepochs=5" in layer.issues[0].message
        )

    def test_missing_equals(self) -> None:
        """An argument without "=" is a usage error."""
        with pytest.raises(UsageError, match=r"expected section\.key=value"):
            set_layer(["training.nepochs"])


class TestParseValue:
    def test_toml_values(self) -> None:
        """Numbers, booleans, arrays and quoted strings parse as TOML."""
        assert [
            parse_value("4"),
            parse_value("true"),
            parse_value("[1, 2]"),
            parse_value('"a"'),
        ] == [4, True, [1, 2], "a"]

    def test_injection_stays_a_string(self) -> None:
        """A value that would define more keys is kept as text."""
        assert parse_value("1\nx = 2") == "1\nx = 2"


class TestFileLayers:
    def test_extends_in_order_relative_to_the_file(self, tmp_path: Path) -> None:
        """Bases come first, in order, depth first, resolved against the naming file."""
        (tmp_path / "base").mkdir()
        (tmp_path / "base" / "a.toml").write_text('spec_version = 1\nextends = ["c.toml"]\n')
        (tmp_path / "base" / "c.toml").write_text("spec_version = 1\n")
        (tmp_path / "b.toml").write_text("spec_version = 1\n")
        (tmp_path / "s.toml").write_text('spec_version = 1\nextends = ["base/a.toml", "b.toml"]\n')
        layers = file_layers(str(tmp_path / "s.toml"))
        names = [Path(layer.source).name for layer in layers if layer.source]
        assert names == ["c.toml", "a.toml", "b.toml", "s.toml"]
        assert [layer.kind for layer in layers] == ["extends", "extends", "extends", "spec"]

    def test_cycle_names_the_files(self, tmp_path: Path) -> None:
        """A cycle of extends is an error that shows the cycle."""
        (tmp_path / "a.toml").write_text('spec_version = 1\nextends = ["b.toml"]\n')
        (tmp_path / "b.toml").write_text('spec_version = 1\nextends = ["a.toml"]\n')
        with pytest.raises(SpecError, match=r"cycle: .*a\.toml → .*b\.toml → .*a\.toml"):
            file_layers(str(tmp_path / "a.toml"))

    def test_missing_base(self, tmp_path: Path) -> None:
        """A missing base is reported at the extends line."""
        (tmp_path / "s.toml").write_text('spec_version = 1\nextends = ["nope.toml"]\n')
        with pytest.raises(SpecError) as caught:
            file_layers(str(tmp_path / "s.toml"))
        assert caught.value.issues[0].origin.line == 2

    def test_file_hash(self, tmp_path: Path) -> None:
        """A spec layer records the file's absolute path, sha256 and size."""
        (tmp_path / "s.toml").write_text("spec_version = 1\n")
        layer = read_spec(str(tmp_path / "s.toml"))
        assert (
            layer.file is not None
            and layer.file.size == 17
            and layer.file.sha256.startswith("sha256:")
        )


class TestLoadLayers:
    def test_layer_order(self, tmp_path: Path) -> None:
        """default < spec < env < set."""
        (tmp_path / "s.toml").write_text("spec_version = 1\n")
        layers = load_layers(str(tmp_path / "s.toml"), ["run.seed=1"], {"PTYCHO__RUN__SEED": "2"})
        assert [layer.kind for layer in layers] == ["default", "spec", "env", "set"]


class TestMigratedText:
    def test_current_spec_unchanged(self) -> None:
        """A current spec is printed as written (comments kept)."""
        text = "# hi\nspec_version = 1\n"
        assert migrated_text(text, source="s.toml") == text

    def test_yaml_upgraded(self) -> None:
        """A PtychoPINN YAML becomes spec v1 TOML with notes as comments."""
        text = migrated_text("nepochs: 3\nbackend: tensorflow\n", source="c.yml")
        assert text.startswith("# Migrated from c.yml (spec_version 0)")
        assert "spec_version = 1" in text and "nepochs = 3" in text
