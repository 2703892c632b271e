"""Properties of the compiler over generated specs (hypothesis)."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    HOST,
    SPEC_PATH,
    compile_text,
    facts_for,
    layers_for,
    spec_cases,
    toml,
    toml_value,
)

from ptycho_spec.compile import as_spec, check_layers, compile_run
from ptycho_spec.convert import to_toml_tree
from ptycho_spec.errors import DataError, SpecError
from ptycho_spec.lock import dumps_lock, loads_lock
from ptycho_spec.tree import KeyPath, dotted, fields_of, iter_leaves, set_in, table_class

# PTYCHO_EXAMPLES=2000 turns these into a longer fuzzing session.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("PTYCHO_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY_SETTINGS
@given(spec_cases())
def test_valid_specs_compile_and_read_back(case: tuple[dict[str, Any], Any]) -> None:
    """(a) Every generated valid spec compiles, and its lock reads back equal."""
    tree, facts = case
    lock = compile_text(toml(tree), facts)
    assert loads_lock(dumps_lock(lock)) == lock


@PROPERTY_SETTINGS
@given(spec_cases())
def test_compiling_a_lock_is_a_fixpoint(case: tuple[dict[str, Any], Any]) -> None:
    """(b) A lock's resolved values, written back as a spec, compile to the same run digest."""
    tree, facts = case
    lock = compile_text(toml(tree), facts)
    again = compile_text(toml(_spec_of_lock(lock)), facts)
    assert again.header.run_digest == lock.header.run_digest


def _spec_of_lock(lock: Any) -> dict[str, Any]:
    """The resolved settings as a spec: lock-only fields dropped, ``"none"`` kept."""
    return to_toml_tree(as_spec(lock.resolved)) | {"extends": []}


_LAYER_VALUES: dict[KeyPath, st.SearchStrategy[Any]] = {
    ("training", "nepochs"): st.integers(1, 1000),
    ("training", "batch_size"): st.integers(1, 256),
    ("training", "learning_rate"): st.floats(1e-6, 1.0),
    ("run", "seed"): st.integers(0, 10**6),
    ("model", "probe_scale"): st.floats(0.1, 10.0),
    ("execution", "log_every_n_steps"): st.integers(1, 1000),
    ("data", "simulate", "nphotons"): st.floats(1.0, 1e12),
}


@PROPERTY_SETTINGS
@given(st.data())
def test_the_highest_layer_wins(data: st.DataObject) -> None:
    """(c) A value set at a higher layer wins, and its provenance names that layer."""
    key = data.draw(st.sampled_from(list(_LAYER_VALUES)))
    layers = data.draw(
        st.lists(st.sampled_from(["extends", "spec", "env", "set"]), min_size=1, unique=True)
    )
    values = {layer: data.draw(_LAYER_VALUES[key]) for layer in layers}
    lock = compile_text(**_layered(key, values))
    winner = max(layers, key=["extends", "spec", "env", "set"].index)
    assert _resolved(lock, key) == values[winner]
    assert lock.provenance[dotted(key)].layer == winner


def _layered(key: KeyPath, values: dict[str, Any]) -> dict[str, Any]:
    """Arguments of ``compile_text`` that set ``key`` in each layer of ``values``."""
    base = {"data": {"source": "simulate", "n_groups": "all"}, "run": {"task": "train"}}
    spec: dict[str, Any] = {}
    for layer, tree in (("extends", base), ("spec", spec)):
        if layer in values:
            set_in(tree, key, values[layer])
    env = (
        {"PTYCHO__" + "__".join(key).upper(): toml_value(values["env"])} if "env" in values else {}
    )
    sets = [f"{dotted(key)}={toml_value(values['set'])}"] if "set" in values else []
    return {
        "text": toml(spec),
        "bases": [("/virtual/specs/base.toml", toml(base))],
        "environ": env,
        "sets": sets,
    }


def _resolved(lock: Any, key: KeyPath) -> Any:
    obj: Any = lock.resolved.execution if key[0] == "execution" else lock.resolved.canonical
    for part in key[1:] if key[0] == "execution" else key:
        obj = getattr(obj, part)
    return obj


_TABLE_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True)


@PROPERTY_SETTINGS
@given(spec_cases(), st.data())
def test_an_extra_key_anywhere_is_reported_at_its_path(
    case: tuple[dict[str, Any], Any], data: st.DataObject
) -> None:
    """(d) A key inserted anywhere gives exit code 2 naming that key's path."""
    tree, _facts = case
    tables = [()] + [p for p, v in _tables(tree)]
    table = data.draw(st.sampled_from(tables))
    cls = table_class(table)
    key = data.draw(
        _TABLE_KEYS.filter(
            lambda k: k not in fields_of(cls) and k not in ("spec_version", "extends")
        )
    )
    set_in(tree, (*table, key), 1)
    with pytest.raises(SpecError) as caught:
        check_layers(layers_for(toml(tree)), HOST)
    assert caught.value.exit_code == 2
    assert dotted((*table, key)) in [i.path for i in caught.value.issues]


def _tables(tree: dict[str, Any], prefix: KeyPath = ()) -> list[tuple[KeyPath, dict[str, Any]]]:
    found = []
    for key, value in tree.items():
        if isinstance(value, dict):
            found.append(((*prefix, key), value))
            found += _tables(value, (*prefix, key))
    return found


_WRONG = st.sampled_from(["text", "auto", "none", True, 7, -3, 2.5, [1, 2], {"x": 1}, [], {}])


@PROPERTY_SETTINGS
@given(spec_cases(), st.data())
def test_a_wrong_value_anywhere_gives_a_diagnostic(
    case: tuple[dict[str, Any], Any], data: st.DataObject
) -> None:
    """(e) A value of another type anywhere gives a diagnostic, never another exception."""
    tree, facts = case
    leaves = list(iter_leaves(tree))
    path, _value = data.draw(st.sampled_from(leaves))
    wrong = data.draw(_WRONG)
    set_in(tree, path, wrong)
    try:
        compile_text(toml(tree), facts)
    except SpecError as exc:
        assert exc.issues
        if isinstance(wrong, list | dict):
            assert dotted(path) in [i.path for i in exc.issues]


@PROPERTY_SETTINGS
@given(spec_cases(), st.randoms(use_true_random=False))
def test_key_order_does_not_change_the_lock(
    case: tuple[dict[str, Any], Any], rng: random.Random
) -> None:
    """(f) Keys in another order (inline tables keep every line) give the same lock bytes."""
    tree, facts = case
    first = dumps_lock(compile_text(_inline_toml(tree, rng), facts))
    second = dumps_lock(compile_text(_inline_toml(tree, rng), facts))
    assert first == second


def _inline_toml(tree: dict[str, Any], rng: random.Random) -> str:
    """One line per section, as an inline table with its keys shuffled."""
    lines = ["spec_version = 1"]
    for section, table in tree.items():
        lines.append(f"{section} = {_inline(table, rng)}")
    return "\n".join(lines) + "\n"


def _inline(table: dict[str, Any], rng: random.Random) -> str:
    items = list(table.items())
    rng.shuffle(items)
    parts = [f"{k} = {_inline(v, rng) if isinstance(v, dict) else toml_value(v)}" for k, v in items]
    return "{ " + ", ".join(parts) + " }"


def test_compile_run_uses_only_its_arguments() -> None:
    """The same layers and facts compile to the same bytes twice (no hidden inputs)."""
    text = toml({"data": {"source": "simulate", "n_groups": "all"}, "run": {"task": "train"}})
    layers = layers_for(text)
    first = dumps_lock(compile_run(layers, facts_for({"data": {"source": "simulate"}}), HOST))
    assert first == dumps_lock(
        compile_run(layers, facts_for({"data": {"source": "simulate"}}), HOST)
    )
    assert f'file = "{os.path.basename(SPEC_PATH)}"' in first  # named relative to its folder


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["auto", "none", "all", "simulate", "npz", "infer", "cpu", "ddp"]),
)
_KEYS = st.one_of(
    st.sampled_from(["run", "data", "simulate", "model", "training", "execution", "N", "gridsize"]),
    st.sampled_from(
        ["task", "source", "n_groups", "K", "epochs", "devices", "optimizer", "bundle"]
    ),
    st.text(min_size=1, max_size=6),
)
_TREES = st.recursive(
    st.dictionaries(_KEYS, _SCALARS, max_size=4),
    lambda children: st.dictionaries(
        _KEYS, st.one_of(_SCALARS, children, st.lists(_SCALARS, max_size=2)), max_size=4
    ),
    max_leaves=12,
)


@PROPERTY_SETTINGS
@given(
    _TREES,
    st.dictionaries(
        st.sampled_from(["PTYCHO__MODEL__N", "PTYCHO__X", "PTYCHO__DATA"]), st.text(max_size=6)
    ),
)
def test_arbitrary_trees_never_crash(tree: dict[str, Any], environ: dict[str, str]) -> None:
    """Any TOML tree and any PTYCHO__ values give a lock or a diagnostic, never a traceback."""
    try:
        text = toml(tree)
    except (TypeError, ValueError):  # not expressible as TOML (e.g. a NaN-free writer refusal)
        return
    try:
        compile_text(text, environ=environ)
    except (SpecError, DataError):
        pass


@PROPERTY_SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    """Any text is a spec or a diagnostic."""
    try:
        compile_text(text)
    except SpecError as exc:
        assert exc.issues
