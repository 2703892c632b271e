"""Spec versions and the migrations between them.

A spec is upgraded one step at a time (``0 → 1 → …``) before validation. Version 0 is a
PtychoPINN training configuration: the YAML (or flat dict) form of its ``TrainingConfig``, with
model settings in a nested ``model:`` mapping or at the top level. Each step returns the new
tree and notes on what it renamed or dropped; what cannot be represented is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from attrs import frozen

from ptycho_spec.convert import flatten
from ptycho_spec.errors import Origin, SpecError, SpecIssue
from ptycho_spec.schema import SPEC_SECTIONS, SPEC_VERSION
from ptycho_spec.tree import get_in, key_path, leaf_field, set_in
from ptycho_spec.vocabulary import OPTIMIZER_PARAMS, SCHEDULER_PARAMS

YAML_SUFFIXES: Final = (".yaml", ".yml")


@frozen
class Upgraded:
    """A spec tree at the current version (``spec_version`` included) and the step notes."""

    tree: dict[str, Any]
    notes: tuple[str, ...] = ()


def spec_version_of(tree: Mapping[str, Any], *, source: str) -> int:
    """The version a parsed spec declares; YAML files are version 0 (PtychoPINN configs)."""
    if source.endswith(YAML_SUFFIXES):
        return 0
    version = tree.get("spec_version")
    if version is None:
        _fail(
            source, "", "spec_version is required; run `ptycho-spec migrate` for PtychoPINN configs"
        )
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or not 0 <= version <= SPEC_VERSION
    ):
        _fail(
            source,
            "spec_version",
            f"unsupported spec_version {_shown(version)}; this ptycho-spec reads 0 to {SPEC_VERSION}",
        )
    return version


def upgrade(tree: Mapping[str, Any], version: int, *, source: str) -> Upgraded:
    """Apply every step from ``version`` to the current spec version."""
    current: dict[str, Any] = dict(tree)
    notes: list[str] = []
    for step_from in range(version, SPEC_VERSION):
        current, step_notes = STEPS[step_from](current, source)
        notes += step_notes
    return Upgraded(tree=current, notes=tuple(notes))


def _shown(value: Any) -> str:
    """A value as JSON for a message; TOML and YAML dates and times are written as text."""
    return json.dumps(value, default=str)


def _fail(source: str, path: str, message: str) -> None:
    raise SpecError([SpecIssue(path=path, message=message, origin=Origin("spec", file=source))])


# --- version 0: PtychoPINN TrainingConfig -----------------------------------------------------

_V0_MODEL_KEYS: Final = frozenset(
    {
        "N",
        "gridsize",
        "n_filters_scale",
        "model_type",
        "architecture",
        "amp_activation",
        "object_big",
        "probe_big",
        "probe_mask",
        "pad_object",
        "probe_scale",
        "gaussian_smoothing_sigma",
        "probe_trainable",
        "intensity_scale_trainable",
    }
)

# PtychoPINN key (TrainingConfig field or legacy params.cfg name) → v1 key path
_V0_RENAMES: Final = MappingProxyType(
    {
        "train_data_file": "data.train_file",
        "train_data_file_path": "data.train_file",
        "test_data_file": "data.test_file",
        "test_data_file_path": "data.test_file",
        "n_groups": "data.n_groups",
        "n_images": "data.n_groups",
        "n_subsample": "data.n_subsample",
        "neighbor_count": "data.neighbor_count",
        "sequential_sampling": "data.sequential_sampling",
        "output_dir": "run.output_dir",
        "output_prefix": "run.output_dir",
        "subsample_seed": "run.seed",
        "torch_loss_mode": "training.loss",
        "lr_warmup_epochs": "training.warmup_epochs",
        "lr_min_ratio": "training.min_lr_ratio",
        "object.big": "model.object_big",
        "probe.big": "model.probe_big",
        "probe.mask": "model.probe_mask",
        "probe.trainable": "model.probe_trainable",
        "intensity_scale.trainable": "model.intensity_scale_trainable",
        **{k: f"model.{k}" for k in _V0_MODEL_KEYS},
        **{
            k: f"training.{k}"
            for k in (
                "batch_size",
                "nepochs",
                "mae_weight",
                "nll_weight",
                "realspace_weight",
                "nphotons",
                "learning_rate",
                "optimizer",
                "momentum",
                "weight_decay",
                "adam_beta1",
                "adam_beta2",
                "scheduler",
                "gradient_clip_val",
                "gradient_clip_algorithm",
                "plateau_factor",
                "plateau_patience",
                "plateau_min_lr",
                "plateau_threshold",
            )
        },
    }
)

_PATH_KEYS: Final = frozenset({"data.train_file", "data.test_file", "run.output_dir"})
_ANY: Final = object()
# PtychoPINN settings v1 cannot express: dropped at their PtychoPINN default, else an error.
_V0_UNSUPPORTED: Final = MappingProxyType(
    {
        "backend": _ANY,  # ptycho-spec always runs the PyTorch backend
        "positions_provided": True,
        "positions.provided": True,
        "realspace_mae_weight": 0.0,
        "torch_mae_pred_l2_match_target": False,
        "enable_oversampling": False,
        "neighbor_pool_size": None,
        "fno_modes": 12,
        "fno_width": 32,
        "fno_blocks": 4,
        "fno_cnn_blocks": 2,
        "learned_input_channels": 1,
        "max_hidden_channels": None,
        "resnet_width": None,
        "fno_input_transform": "none",
        "generator_output_mode": "real_imag",
        "probe_mask_sigma": 1.0,
        "probe_mask_diameter": None,
    }
)


def v0_to_v1(tree: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """PtychoPINN ``TrainingConfig`` (YAML or flat dict) → spec v1."""
    issues: list[SpecIssue] = []
    notes: list[str] = []
    out: dict[str, Any] = {"spec_version": 1}
    for key, value in _v0_items(tree, source, issues):
        _v0_key(out, key, value, issues, notes)
    _v0_source_and_task(out)
    notes += _drop_inapplicable(out)
    if issues:
        raise SpecError([SpecIssue(i.path, i.message, Origin("spec", file=source)) for i in issues])
    return {k: out[k] for k in ("spec_version", *SPEC_SECTIONS) if k in out}, notes


def _v0_items(
    tree: Mapping[str, Any], source: str, issues: list[SpecIssue]
) -> list[tuple[str, Any]]:
    """Flatten ``model:`` into the top level; refuse a key given both ways with two values."""
    model = tree.get("model", {})
    if not isinstance(model, Mapping):
        _fail(source, "model", "expected a mapping of model settings")
    items = [(k, v) for k, v in tree.items() if k not in ("model", "spec_version")]
    for key, value in model.items():
        if key in tree and tree[key] != value:
            issues.append(
                SpecIssue(f"model.{key}", f"also set at the top level to {_shown(tree[key])}")
            )
        elif key not in tree:
            items.append((key, value))
    return items


def _v0_key(
    out: dict[str, Any], key: str, value: Any, issues: list[SpecIssue], notes: list[str]
) -> None:
    if key in _V0_UNSUPPORTED:
        _v0_unsupported(key, value, issues, notes)
    elif value is None:
        return  # PtychoPINN's "unset": the v1 default applies
    elif key not in _V0_RENAMES:
        issues.append(
            SpecIssue(key, "is not a PtychoPINN TrainingConfig setting ptycho-spec knows")
        )
    else:
        _v0_set(out, _V0_RENAMES[key], _v0_value(key, value, issues), key, issues, notes)


def _v0_unsupported(key: str, value: Any, issues: list[SpecIssue], notes: list[str]) -> None:
    default = _V0_UNSUPPORTED[key]
    if default is _ANY or value == default:
        notes.append(f"{key} = {_shown(value)} dropped: it has no counterpart in spec v1")
    else:
        issues.append(
            SpecIssue(
                key,
                f"= {_shown(value)} cannot be represented in spec v1 (only {_shown(default)})",
            )
        )


def _v0_value(key: str, value: Any, issues: list[SpecIssue]) -> Any:
    if key == "gradient_clip_algorithm" and value == "agc":
        issues.append(SpecIssue(key, '"agc" cannot be represented in spec v1 ("norm" or "value")'))
    if key == "architecture" and value != "cnn":
        issues.append(
            SpecIssue(key, f'= {_shown(value)} cannot be represented in spec v1 (only "cnn")')
        )
    if key == "amp_activation" and isinstance(value, str):
        return value.lower()  # PtychoPINN spells it "SiLU" as well as "silu" and "swish"
    return value


def _v0_set(
    out: dict[str, Any],
    dotted_path: str,
    value: Any,
    key: str,
    issues: list[SpecIssue],
    notes: list[str],
) -> None:
    path = key_path(dotted_path)
    attribute = leaf_field(path)
    aliases = attribute.metadata.get("value_aliases", {}) if attribute is not None else {}
    if isinstance(value, str) and value in aliases:
        value = aliases[value]
    value = _yaml_number(value, attribute, key, notes)
    previous = get_in(out, path)
    if previous is not None and previous != value:
        issues.append(
            SpecIssue(key, f"conflicts with another key for {dotted_path} ({_shown(previous)})")
        )
        return
    set_in(out, path, value)
    if key != path[-1]:
        notes.append(f"{key} → {dotted_path}")
    if dotted_path in _PATH_KEYS:
        notes.append(
            f"{dotted_path} = {_shown(value)} is now relative to the spec's folder, not the working directory"
        )


def _yaml_number(value: Any, attribute: Any, key: str, notes: list[str]) -> Any:
    """YAML 1.1 reads ``1.0e9`` (an exponent without a sign) as text; a number field takes
    it as the number it spells."""
    if not isinstance(value, str) or attribute is None or float not in flatten(attribute.type):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    notes.append(f"{key} = {_shown(value)} read as the number {number!r}")
    return number


def _v0_source_and_task(out: dict[str, Any]) -> None:
    data = out.get("data", {})
    if "train_file" in data or "test_file" in data:
        data["source"] = "npz"
        out["data"] = data
    if "test_file" in data:
        set_in(out, ("run", "task"), "train+infer")
    elif "train_file" in data:
        set_in(out, ("run", "task"), "train")


def _drop_inapplicable(out: dict[str, Any]) -> list[str]:
    """PtychoPINN carries every optimizer/scheduler knob; v1 refuses those without effect."""
    training = out.get("training", {})
    model = out.get("model", {})
    optimizer = training.get("optimizer", "adam")
    scheduler = training.get("scheduler", "constant")
    drop = [p for p, users in OPTIMIZER_PARAMS.items() if optimizer not in users]
    drop += [p for s, ps in SCHEDULER_PARAMS.items() if s != scheduler for p in ps]
    if training.get("gradient_clip_val") is None:
        drop.append("gradient_clip_algorithm")
    notes = [_drop(training, "training", k) for k in drop if k in training]
    data = out.get("data", {})
    if model.get("gridsize", 1) == 1:
        if model.get("object_big") is True:
            notes.append(_drop(model, "model", "object_big"))
        if "neighbor_count" in data:
            notes.append(_drop(data, "data", "neighbor_count"))
    return notes


def _drop(table: dict[str, Any], name: str, key: str) -> str:
    value = table.pop(key)
    return f"{name}.{key} = {_shown(value)} dropped: it has no effect with these settings"


STEPS: Final[Mapping[int, Callable[[dict[str, Any], str], tuple[dict[str, Any], list[str]]]]] = (
    MappingProxyType({0: v0_to_v1})
)
