"""Key paths over nested TOML tables, and the schema tables they name.

A key path is a tuple of key parts, ``("data", "simulate", "nphotons")``, shown dotted
(``data.simulate.nphotons``). Raw spec trees are plain nested dicts as ``tomllib`` returns them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ptycho_spec.schema import Spec

KeyPath = tuple[str, ...]


def dotted(path: KeyPath) -> str:
    """``("model", "N")`` → ``"model.N"``."""
    return ".".join(path)


def key_path(dotted_key: str) -> KeyPath:
    """``"model.N"`` → ``("model", "N")``."""
    return tuple(dotted_key.split("."))


def value_at(obj: Any, path: KeyPath) -> Any:
    """The attribute at ``path`` of nested attrs instances (``spec.model.N``)."""
    for part in path:
        obj = getattr(obj, part)
    return obj


@functools.cache
def fields_of(cls: type) -> Mapping[str, attrs.Attribute[Any]]:
    """The attrs fields of ``cls`` by name, with their types resolved from annotations."""
    attrs.resolve_types(cls)
    return {a.name: a for a in attrs.fields(cls)}


def is_section(attribute: attrs.Attribute[Any]) -> bool:
    """Whether a field is a sub-table (``[data.simulate]``) rather than a setting."""
    return bool(attribute.metadata.get("section"))


def section_class(attribute: attrs.Attribute[Any]) -> type:
    """The attrs class a section field holds."""
    return attribute.type  # type: ignore[return-value]


def table_class(path: KeyPath, root: type = Spec) -> type | None:
    """The attrs class of the table at ``path`` (``()`` is ``root``), or None if none."""
    cls = root
    for part in path:
        attribute = fields_of(cls).get(part)
        if attribute is None or not is_section(attribute):
            return None
        cls = section_class(attribute)
    return cls


def leaf_field(path: KeyPath, root: type = Spec) -> attrs.Attribute[Any] | None:
    """The setting (not section) at ``path``, or None if the schema has none there."""
    cls = table_class(path[:-1], root) if path else None
    attribute = fields_of(cls).get(path[-1]) if cls is not None else None
    return attribute if attribute is not None and not is_section(attribute) else None


def schema_leaves(
    cls: type = Spec, prefix: KeyPath = ()
) -> Iterator[tuple[KeyPath, attrs.Attribute[Any]]]:
    """Every setting below ``cls`` with its key path, in declaration order."""
    for name, attribute in fields_of(cls).items():
        if is_section(attribute):
            yield from schema_leaves(section_class(attribute), (*prefix, name))
        else:
            yield (*prefix, name), attribute


@functools.cache
def aliases_of(cls: type) -> Mapping[str, str]:
    """Deprecated key names accepted in the table of ``cls`` → canonical field name."""
    return {
        alias: name
        for name, attribute in fields_of(cls).items()
        for alias in attribute.metadata.get("aliases", ())
    }


def iter_leaves(tree: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every non-table value of a nested dict with its key path."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from iter_leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def iter_nodes(tree: Mapping[str, Any], prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every key path of a nested dict, tables included, parents before children."""
    for key, value in tree.items():
        yield (*prefix, key), value
        if isinstance(value, Mapping):
            yield from iter_nodes(value, (*prefix, key))


def get_in(tree: Mapping[str, Any], path: KeyPath, default: Any = None) -> Any:
    """The value at ``path``, or ``default`` when any part is missing or not a table."""
    node: Any = tree
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_in(tree: dict[str, Any], path: KeyPath, value: Any) -> None:
    """Set ``path`` in a dict being built, creating (or replacing non-table) parents."""
    node = tree
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def deep_copy(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of nested dicts (leaves are immutable TOML values or lists of them)."""
    return {k: deep_copy(v) if isinstance(v, Mapping) else _copy_leaf(v) for k, v in tree.items()}


def _copy_leaf(value: Any) -> Any:
    if isinstance(value, list):
        return [deep_copy(v) if isinstance(v, Mapping) else _copy_leaf(v) for v in value]
    return value
