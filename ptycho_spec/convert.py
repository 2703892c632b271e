"""The one cattrs converter: strict structuring of TOML values into the schema classes.

TOML values are already typed, so no coercion is needed and none is done: ``int`` refuses
``bool`` and strings, ``float`` takes integers (TOML ``1`` for ``1.0``), ``str`` refuses numbers.
``"none"`` stands for ``None`` because TOML has no null, and ``Literal`` fields accept exactly
their listed strings. Every refusal raises ``ValueError`` whose message names what was expected
and what was given; callers add the location. Extra keys are forbidden.

No other module registers hooks; everything structures through :func:`converter`.
"""

from __future__ import annotations

import difflib
import functools
import json
import types
import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from cattrs import Converter

NONE_STR: typing.Final = "none"
_NoneType = type(None)
_PRIMITIVES: typing.Final = (bool, int, float, str)


@functools.cache
def converter() -> Converter:
    """The configured converter (built once per process, never changed afterwards)."""
    conv = Converter(forbid_extra_keys=True, detailed_validation=True)
    for tp in _PRIMITIVES:
        conv.register_structure_hook(tp, structure_leaf)
    conv.register_structure_hook_func(_is_special_leaf, structure_leaf)
    return conv


def structure(value: Any, tp: Any) -> Any:
    """Structure ``value`` (a TOML value or table) as ``tp``; strict, see the module docstring."""
    return converter().structure(value, tp)


def to_toml_tree(obj: Any) -> Any:
    """Unstructure an attrs instance into TOML-ready values: ``None`` → ``"none"``, tuples → lists."""
    return _tomlify(converter().unstructure(obj))


def _tomlify(value: Any) -> Any:
    if value is None:
        return NONE_STR
    if isinstance(value, Mapping):
        return {str(k): _tomlify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tomlify(v) for v in value]
    return value


# --- leaf hooks -------------------------------------------------------------------------------


def _is_special_leaf(tp: Any) -> bool:
    """Literal, Optional/Union of leaves, NoneType and homogeneous tuples of leaves."""
    origin = typing.get_origin(tp)
    if tp is _NoneType or origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_is_leaf(m) for m in typing.get_args(tp))
    return origin is tuple and _is_homogeneous_tuple(tp) and _is_leaf(typing.get_args(tp)[0])


def _is_leaf(tp: Any) -> bool:
    return tp in _PRIMITIVES or _is_special_leaf(tp)


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return len(args) == 2 and args[1] is Ellipsis


def structure_leaf(value: Any, tp: Any) -> Any:
    """Structure one TOML value as a leaf type; ``ValueError`` names what was expected."""
    if typing.get_origin(tp) is tuple:
        return _structure_tuple(value, tp)
    members = flatten(tp)
    literals = [m for m in members if isinstance(m, str)]
    if isinstance(value, str) and value in literals:
        return value
    if _NoneType in members and value == NONE_STR:
        return None
    for member in members:
        if member in _PRIMITIVES and _matches(value, member):
            return float(value) if member is float else value
    raise ValueError(_mismatch(value, tp, literals))


def _structure_tuple(value: Any, tp: Any) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        msg = f"expected {describe(tp)} (got {show(value)})"
        raise ValueError(msg)
    item_tp = typing.get_args(tp)[0]
    return tuple(structure_leaf(item, item_tp) for item in value)


def _matches(value: Any, tp: type) -> bool:
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _mismatch(value: Any, tp: Any, literals: list[str]) -> str:
    primitives = [m for m in flatten(tp) if m in _PRIMITIVES]
    if isinstance(value, str) and literals and str not in primitives:
        close = difflib.get_close_matches(value, literals, n=1, cutoff=0.6)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        return f"must be {describe(tp)} (got {show(value)}){hint}"
    return f"expected {describe(tp)} (got {show(value)})"


def flatten(tp: Any) -> list[Any]:
    """The members of a leaf type: primitive types, ``NoneType`` and literal strings."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return list(typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in flatten(arg)]
    return [tp]


_NAMES: typing.Final = MappingProxyType(
    {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        _NoneType: '"none"',
    }
)


def describe(tp: Any) -> str:
    """A reader's name for a leaf type: ``an integer, "all" or "auto"``."""
    if typing.get_origin(tp) is tuple:
        return f"an array of {_plural(typing.get_args(tp)[0])}"
    members = flatten(tp)
    literals = [json.dumps(m) for m in members if isinstance(m, str)]
    if len(members) == len(literals) and len(literals) > 1:
        return "one of " + ", ".join(literals)
    pieces = [_NAMES[m] for m in members if not isinstance(m, str) and m is not _NoneType]
    pieces += literals + ([_NAMES[_NoneType]] if _NoneType in members else [])
    return pieces[0] if len(pieces) == 1 else ", ".join(pieces[:-1]) + " or " + pieces[-1]


def _plural(tp: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers"}.get(tp, describe(tp))


def show(value: Any) -> str:
    """A TOML-flavoured rendering of a value for messages: ``"4"``, ``true``, ``a table``."""
    if value is None:
        return json.dumps(NONE_STR)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return repr(value) if isinstance(value, float) else str(value)
