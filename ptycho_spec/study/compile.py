"""A study → its points, each compiled to its own lock before any of them runs.

:func:`expand` is pure: the cartesian product of ``[grid]``, crossed with the rows of ``[zip]``,
crossed with the repeats. A point's overrides are one ``set`` layer on top of the base spec's
layers and the ``PTYCHO__*`` variables, exactly what ``--set key=value`` arguments make, located
at the study file's lines. :func:`compile_study` compiles every point (``compile_layers``: it
reads the data the point names) and reports every problem of every point at once, each issue
prefixed with the point it belongs to.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import tomli_w
from attrs import frozen

from ptycho_spec.compile import compile_layers
from ptycho_spec.convert import show
from ptycho_spec.errors import Origin, SpecError, SpecIssue
from ptycho_spec.facts import HostFacts
from ptycho_spec.load import Layer, default_layer, env_layer, file_layers, make_layer
from ptycho_spec.lock import Lock
from ptycho_spec.merge import merge
from ptycho_spec.study.spec import SEED_KEY, Study
from ptycho_spec.tree import KeyPath, get_in, key_path, set_in


@frozen(kw_only=True)
class Point:
    """One run of a study: its index and the settings it overrides on the base spec, each with
    where the study file gives it."""

    index: int
    overrides: tuple[tuple[str, Any], ...]
    origins: tuple[Origin, ...]

    @property
    def id(self) -> str:
        return f"{self.index:03d}"

    @property
    def label(self) -> str:
        """``model.gridsize=2, data.n_groups=64``."""
        return ", ".join(f"{key}={render_value(value)}" for key, value in self.overrides)


@frozen(kw_only=True)
class CompiledPoint:
    point: Point
    lock: Lock


def render_value(value: Any) -> str:
    """A value as TOML writes it inline (``64``, ``"all"``, ``[1, 2]``)."""
    if isinstance(value, Mapping):
        return show(value)
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def expand(study: Study, base_seed: int | None) -> tuple[Point, ...]:
    """Every point, in order: the first ``[grid]`` key varies slowest, repeats fastest.

    ``base_seed`` is the base spec's ``run.seed``; repeats add to it (None: the base's seed is
    no integer, so repeats leave it for the compiler to report).
    """
    grid = itertools.product(*(_choices(a.key, a.values, a.origin) for a in study.grid))
    zips = list(zip(*(_choices(a.key, a.values, a.origin) for a in study.zip), strict=True))
    repeats: list[tuple[tuple[str, Any, Origin], ...]] = [()]
    if study.settings.repeats > 1 and base_seed is not None:
        origin = Origin("set", file=study.source, detail="repeats")
        repeats = [((SEED_KEY, base_seed + r, origin),) for r in range(study.settings.repeats)]
    combos = itertools.product(grid, zips or [()], repeats)
    return tuple(
        Point(
            index=i,
            overrides=tuple((key, value) for key, value, _ in (*g, *z, *r)),
            origins=tuple(origin for _, _, origin in (*g, *z, *r)),
        )
        for i, (g, z, r) in enumerate(combos)
    )


def _choices(key: str, values: Sequence[Any], origin: Origin) -> list[tuple[str, Any, Origin]]:
    return [(key, value, origin) for value in values]


def point_layer(point: Point) -> Layer:
    """The point's overrides as one ``set`` layer (aliases rewritten, as for ``--set``)."""
    tree: dict[str, Any] = {}
    origins: dict[KeyPath, Origin] = {}
    for (key, value), origin in zip(point.overrides, point.origins, strict=True):
        path = key_path(key)
        set_in(tree, path, value)
        for end in range(1, len(path) + 1):
            origins.setdefault(path[:end], origin)
    return make_layer("set", tree, lambda p: origins.get(p, Origin("set")))


def compile_study(
    study: Study, environ: Mapping[str, str], host: HostFacts
) -> tuple[tuple[CompiledPoint, ...], tuple[SpecIssue, ...]]:
    """Every point of ``study`` with its lock, and the compiler's warnings (each once).

    Relative paths among the varied values resolve against the study file's folder; points
    run with their output in log files, so a progress bar's ``"auto"`` resolves to off. Points
    of a slurm study run on compute nodes, not on this host: ``execution.cpu_threads``
    ``"auto"`` takes ``launcher.cpus_per_task`` (a login node's CPU count would oversubscribe
    them). ``SpecError`` lists every issue of every point, each naming its point.
    """
    if not os.path.isfile(study.base):
        msg = f"no such spec file: {study.base}"
        raise SpecError([SpecIssue("base", msg, Origin("spec", file=study.source))])
    below = (default_layer(), *file_layers(study.base))
    env = env_layer(environ)
    layers = (*below, env) if env is not None else below
    seed = get_in(merge(layers).tree, key_path(SEED_KEY))
    base_seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    host = attrs.evolve(host, cwd=study.folder, terminal=False)
    if study.settings.launcher.kind == "slurm":
        cpus = study.settings.launcher.cpus_per_task
        host = attrs.evolve(
            host, cpu_threads=cpus, cpu_threads_source=f"launcher.cpus_per_task = {cpus}"
        )
    compiled: list[CompiledPoint] = []
    issues: list[SpecIssue] = []
    warnings: dict[str, SpecIssue] = {}
    for point in expand(study, base_seed):
        try:
            lock = compile_layers((*layers, point_layer(point)), host)
        except SpecError as exc:
            issues += [_of_point(point, issue) for issue in exc.issues]
            warnings |= {w.render(): w for w in exc.warnings}
            continue
        compiled.append(CompiledPoint(point=point, lock=lock))
        warnings |= {w.render(): w for w in lock.warnings}
    if issues:
        raise SpecError(issues, warnings=tuple(warnings.values()))
    return tuple(compiled), tuple(warnings.values())


def _of_point(point: Point, issue: SpecIssue) -> SpecIssue:
    """``point 003 (model.gridsize=3): study.toml:7: model.gridsize: must be 1 or 2``."""
    where = f"point {point.id} ({point.label})" if point.overrides else f"point {point.id}"
    return SpecIssue("", issue.render(), Origin("study", detail=where))
