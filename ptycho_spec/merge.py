"""Layers → one raw tree, plus the history of every key (which layer set it, to what).

Tables merge key by key; any other value replaces what lower layers set. The history keeps
every setting of a key in layer order, so ``explain`` can show them and the lock's provenance
takes the last one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from ptycho_spec.errors import Origin
from ptycho_spec.load import Layer
from ptycho_spec.tree import KeyPath, deep_copy, iter_nodes


@frozen
class Setting:
    """One layer's value for a key."""

    value: Any
    origin: Origin


@frozen
class Merged:
    """The merged raw tree of a spec and where each key's value came from."""

    tree: Mapping[str, Any]
    history: Mapping[KeyPath, tuple[Setting, ...]]
    layers: tuple[Layer, ...]

    def origin(self, path: KeyPath) -> Origin | None:
        """The origin of the value at ``path`` (or of its closest table), None if unset."""
        for end in range(len(path), 0, -1):
            settings = self.history.get(path[:end])
            if settings:
                return settings[-1].origin
        return None

    def locate(self, path: KeyPath) -> Origin:
        """Where to report a problem with ``path``: its origin, or the top spec file when the
        value is a built-in default (a default is wrong only for this spec)."""
        origin = self.origin(path)
        if origin is not None and origin.layer != "default":
            return origin
        top = self.top
        return Origin("default", file=top.source if top is not None else None)

    def explicit(self, path: KeyPath) -> bool:
        """Whether a layer above the built-in defaults set ``path``."""
        return any(s.origin.layer != "default" for s in self.history.get(path, ()))

    @property
    def top(self) -> Layer | None:
        """The spec file's own layer (the highest file layer)."""
        return next((layer for layer in reversed(self.layers) if layer.kind == "spec"), None)


def merge(layers: Sequence[Layer]) -> Merged:
    """Merge layers, lowest precedence first."""
    tree: dict[str, Any] = {}
    history: dict[KeyPath, list[Setting]] = {}
    for layer in layers:
        _merge_into(tree, layer.tree)
        for path, value in iter_nodes(layer.tree):
            origin = layer.origins.get(path, Origin(layer.kind))
            history.setdefault(path, []).append(Setting(value, origin))
    frozen_history = {path: tuple(settings) for path, settings in history.items()}
    return Merged(tree=tree, history=frozen_history, layers=tuple(layers))


def _merge_into(tree: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(tree.get(key), dict):
            _merge_into(tree[key], value)
        else:
            tree[key] = deep_copy(value) if isinstance(value, Mapping) else value
