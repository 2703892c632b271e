"""Generator registry: architecture name → keyword-only builder taking the resolved ``Model``.

The compiler validates ``model.architecture`` against ``GENERATORS``' keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

from torch import nn

from ptycho_spec.schema import Model
from runner.models.cnn import build_cnn

GeneratorBuilder = Callable[..., nn.Module]
"""``builder(*, model: Model) -> nn.Module``; the module maps ``(B, C, N, N)`` amplitudes to
object amplitude and phase ``(B, C, N, N)`` each."""


def make_registry(
    entries: Iterable[tuple[str, GeneratorBuilder]],
) -> Mapping[str, GeneratorBuilder]:
    """A read-only name → builder table; a name registered twice raises."""
    table: dict[str, GeneratorBuilder] = {}
    for name, builder in entries:
        if name in table:
            msg = f"a generator is already registered under the name {name!r}"
            raise ValueError(msg)
        table[name] = builder
    return MappingProxyType(table)


GENERATORS: Mapping[str, GeneratorBuilder] = make_registry([("cnn", build_cnn)])


def find_generator(name: str) -> GeneratorBuilder:
    """The builder registered under ``name``; an unknown name raises listing the choices."""
    if name not in GENERATORS:
        msg = f"unknown generator architecture {name!r}; choices: {', '.join(sorted(GENERATORS))}"
        raise ValueError(msg)
    return GENERATORS[name]


def build_generator(*, model: Model) -> nn.Module:
    """The generator ``model.architecture`` names, built from the resolved ``model``."""
    return find_generator(model.architecture)(model=model)
