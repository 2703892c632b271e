"""Tests for ptycho_spec.migrate: PtychoPINN configs (version 0) → spec v1."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from strategies import compile_text, toml

from ptycho_spec.errors import SpecError
from ptycho_spec.migrate import STEPS, spec_version_of, upgrade

PTYCHOPINN_YAML = """
model:
  N: 64
  gridsize: 2
  n_filters_scale: 2
  model_type: pinn
  amp_activation: swish
  object_big: true
  probe_big: true
  probe_mask: false
  pad_object: true
  probe_scale: 4.0
  gaussian_smoothing_sigma: 0.0
  architecture: cnn
  fno_modes: 12
train_data_file: data/train.npz
test_data_file: data/test.npz
batch_size: 16
nepochs: 50
mae_weight: 0.0
nll_weight: 1.0
realspace_weight: 0.0
nphotons: 1.0e9
n_groups: 512
n_subsample: null
subsample_seed: 7
neighbor_count: 4
positions_provided: true
probe_trainable: false
intensity_scale_trainable: true
output_dir: training_outputs
backend: tensorflow
torch_loss_mode: poisson
gradient_clip_val: null
gradient_clip_algorithm: norm
optimizer: adam
momentum: 0.9
weight_decay: 0.0
adam_beta1: 0.9
adam_beta2: 0.999
scheduler: Default
lr_warmup_epochs: 0
lr_min_ratio: 0.1
plateau_factor: 0.5
plateau_patience: 2
learning_rate: 0.001
"""


def migrate(text: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    upgraded = upgrade(yaml.safe_load(text), 0, source="c.yaml")
    return upgraded.tree, upgraded.notes


class TestSpecVersionOf:
    def test_yaml_is_version_0(self) -> None:
        """YAML files are PtychoPINN configs."""
        assert spec_version_of({"spec_version": 1}, source="x.yml") == 0

    def test_missing_version(self) -> None:
        """A TOML spec without spec_version is refused with the migrate hint."""
        with pytest.raises(SpecError, match="run `ptycho-spec migrate`"):
            spec_version_of({}, source="x.toml")

    def test_bool_is_not_a_version(self) -> None:
        """spec_version = true is not 1."""
        with pytest.raises(SpecError, match="unsupported spec_version true"):
            spec_version_of({"spec_version": True}, source="x.toml")


class TestRegistry:
    def test_one_step_per_version(self) -> None:
        """Every older version has a step to the next."""
        assert sorted(STEPS) == [0]


class TestV0ToV1:
    def test_full_training_config(self) -> None:
        """A PtychoPINN TrainingConfig maps field by field."""
        tree, _notes = migrate(PTYCHOPINN_YAML)
        assert tree["spec_version"] == 1
        assert tree["run"] == {"output_dir": "training_outputs", "seed": 7, "task": "train+infer"}
        assert tree["data"]["train_file"] == "data/train.npz" and tree["data"]["source"] == "npz"
        assert tree["model"]["amp_activation"] == "silu"
        assert tree["model"]["architecture"] == "cnn"  # a v1 setting, not dropped
        assert tree["training"]["scheduler"] == "constant"
        assert tree["training"]["loss"] == "poisson"
        assert tree["training"]["nphotons"] == 1e9  # YAML 1.1 read "1.0e9" as text

    def test_inapplicable_knobs_dropped_with_notes(self) -> None:
        """Knobs without effect (momentum with adam, plateau_* with constant) are dropped, noted."""
        tree, notes = migrate(PTYCHOPINN_YAML)
        for key in (
            "momentum",
            "plateau_factor",
            "warmup_epochs",
            "min_lr_ratio",
            "gradient_clip_algorithm",
        ):
            assert key not in tree["training"]
        assert any("training.momentum = 0.9 dropped" in n for n in notes)
        assert any(n.startswith('backend = "tensorflow" dropped') for n in notes)

    def test_migrated_spec_compiles(self) -> None:
        """The migrated spec is valid v1 (given data facts)."""
        tree, _notes = migrate(PTYCHOPINN_YAML)
        tree["data"] = {"source": "simulate", "n_groups": "all"}
        tree["run"]["task"] = "train"
        compile_text(toml(tree))

    def test_unrepresentable_values(self) -> None:
        """Settings spec v1 cannot express are errors, all reported."""
        with pytest.raises(SpecError) as caught:
            migrate(
                "architecture: fno\ngradient_clip_algorithm: agc\npositions_provided: false\nfoo: 1\n"
            )
        assert [i.path for i in caught.value.issues] == [
            "architecture",
            "gradient_clip_algorithm",
            "positions_provided",
            "foo",
        ]

    def test_flat_model_keys_and_legacy_names(self) -> None:
        """Model settings may sit at the top level; params.cfg names are understood."""
        tree, _notes = migrate("N: 128\nobject.big: false\nn_images: 100\n")
        assert tree["model"] == {"N": 128, "object_big": False}
        assert tree["data"]["n_groups"] == 100

    def test_conflicting_duplicates(self) -> None:
        """The same setting given twice with two values is an error."""
        with pytest.raises(SpecError, match=r"conflicts with another key for data\.n_groups"):
            migrate("n_groups: 100\nn_images: 200\n")
