"""Tests for ptycho_spec.merge."""

from __future__ import annotations

from strategies import layers_for

from ptycho_spec.errors import Origin
from ptycho_spec.merge import merge


class TestMerge:
    def test_tables_merge_key_by_key(self) -> None:
        """A layer changes only the keys it sets; the rest of each table stays."""
        merged = merge(layers_for("spec_version = 1\n[training]\nnepochs = 3\n"))
        assert merged.tree["training"]["nepochs"] == 3
        assert merged.tree["training"]["batch_size"] == 16

    def test_history_in_layer_order(self) -> None:
        """Every setting of a key is kept, lowest layer first."""
        merged = merge(
            layers_for(
                "spec_version = 1\n[run]\nseed = 2\n",
                environ={"PTYCHO__RUN__SEED": "3"},
                sets=["run.seed=4"],
            )
        )
        history = merged.history[("run", "seed")]
        assert [(s.origin.layer, s.value) for s in history] == [
            ("default", 0),
            ("spec", 2),
            ("env", 3),
            ("set", 4),
        ]
        assert merged.tree["run"]["seed"] == 4

    def test_origin_falls_back_to_the_table(self) -> None:
        """An unknown key inside a known table is located by its own origin."""
        merged = merge(layers_for("spec_version = 1\n[run]\nsed = 2\n", source="s.toml"))
        assert merged.origin(("run", "sed")) == Origin("spec", file="s.toml", line=3)

    def test_explicit(self) -> None:
        """A key is explicit when any layer above the defaults set it."""
        merged = merge(layers_for("spec_version = 1\n[model]\ngridsize = 1\n"))
        assert merged.explicit(("model", "gridsize"))
        assert not merged.explicit(("model", "N"))

    def test_locate_defaults_at_the_spec_file(self) -> None:
        """A problem with a default value is reported at the spec file (no line)."""
        merged = merge(layers_for("spec_version = 1\n", source="s.toml"))
        assert merged.locate(("data", "source")) == Origin("default", file="s.toml")
