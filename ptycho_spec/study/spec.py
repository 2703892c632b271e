"""The study file (study v1): a base run spec, the settings to vary, repeats over seeds, and how
the points are launched.

Loading checks everything that needs no compiling: the file's own settings (strictly, like a
run spec's), that ``[grid]`` and ``[zip]`` hold non-empty arrays, that ``[zip]`` arrays are
equally long and that no key is varied twice. Whether a varied key is a setting and each value
fits it is for the compiler to say, point by point (``study/compile.py``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any, Final, Literal

from attrs import frozen

from ptycho_spec.convert import show
from ptycho_spec.errors import Origin, SpecError, SpecIssue
from ptycho_spec.load import Layer
from ptycho_spec.merge import merge
from ptycho_spec.schema import ge, section, setting
from ptycho_spec.toml_lines import decode_error, key_lines, parse_toml
from ptycho_spec.tree import KeyPath, iter_nodes
from ptycho_spec.validate import sort_issues, walk_table

STUDY_VERSION: Final = 1
AXIS_TABLES: Final = ("grid", "zip")
SEED_KEY: Final = "run.seed"


@frozen
class Launcher:
    """How the points run: on this host, one after another or spread over its GPUs, or as
    SLURM job arrays through submitit."""

    kind: Literal["local", "slurm"] = setting(
        "local",
        doc='"local" (this host) or "slurm" (job arrays through submitit: the slurm extra).',
    )
    gpus: int = setting(
        0,
        doc="local: GPUs to spread points over, each point taking execution.devices of them "
        "(CUDA_VISIBLE_DEVICES); 0 runs one point after another in the environment as it is.",
        checks=(ge(0),),
    )
    partition: str | None = setting(None, doc='slurm: the partition; "none": the default one.')
    account: str | None = setting(None, doc='slurm: the account charged; "none": your default.')
    time_min: int = setting(
        60, doc="slurm: time limit of each point's job.", unit="minutes", checks=(ge(1),)
    )
    cpus_per_task: int = setting(
        1,
        doc="slurm: CPU cores per task (a point's job has one task per device); also the "
        'points\' execution.cpu_threads where it is "auto".',
        checks=(ge(1),),
    )
    array_parallelism: int = setting(
        64, doc="slurm: the most jobs of one array running at once.", checks=(ge(1),)
    )


@frozen
class Settings:
    """A study file's settings: everything but ``[grid]`` and ``[zip]``."""

    study_version: int = setting(STUDY_VERSION, doc="Version of the study format.")
    base: str = setting(
        doc="The run spec every point starts from; relative to the study file's folder."
    )
    repeats: int = setting(
        1,
        doc="Runs of each point; with more than one, the r-th (from 0) sets run.seed to the "
        "base's run.seed + r.",
        checks=(ge(1),),
    )
    output_dir: str = setting(
        "runs/{name}",
        doc="Study directory; `{name}` is the study file's stem; relative to its folder.",
    )
    launcher: Launcher = section(Launcher, doc="How the points run.")


@frozen(kw_only=True)
class Axis:
    """One varied run-spec key, its values, and where the study file gives them."""

    key: str  # dotted, e.g. "model.gridsize"
    values: tuple[Any, ...]
    origin: Origin


@frozen(kw_only=True)
class Study:
    """A checked study file. ``grid`` axes are crossed; ``zip`` axes are taken together (one
    combination per index) and crossed with the grid."""

    settings: Settings
    source: str  # the study file as named in messages
    grid: tuple[Axis, ...] = ()
    zip: tuple[Axis, ...] = ()

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.source))[0]

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.source))

    @property
    def base(self) -> str:
        """The base spec's path (relative to the working directory when the study's is)."""
        return os.path.normpath(os.path.join(os.path.dirname(self.source), self.settings.base))

    @property
    def output_dir(self) -> str:
        named = self.settings.output_dir.replace("{name}", self.name)
        return os.path.normpath(os.path.join(self.folder, named))

    @property
    def varied(self) -> tuple[str, ...]:
        """The keys that differ between points, in point-label order."""
        seeds = (SEED_KEY,) if self.settings.repeats > 1 else ()
        return (*(a.key for a in (*self.grid, *self.zip)), *seeds)


def read_study(path: str) -> Study:
    """A study file, checked (``SpecError`` lists every problem)."""
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SpecError([SpecIssue("", f"cannot read study: {reason}", _at(path))]) from None
    return loads_study(text, source=path)


def loads_study(text: str, *, source: str) -> Study:
    """A study file's text, checked (``SpecError`` lists every problem)."""
    try:
        raw = parse_toml(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = decode_error(exc)
        raise SpecError([SpecIssue("", f"invalid TOML: {message}", _at(source, line))]) from None
    lines = key_lines(text)
    issues: list[SpecIssue] = []
    grid, zipped = (
        _axes(raw.get(name, {}), (name,), source, lines, issues) for name in AXIS_TABLES
    )
    values, setting_issues = _settings(
        {k: v for k, v in raw.items() if k not in AXIS_TABLES}, source, lines
    )
    issues += setting_issues + _conflicts(grid, zipped, repeats=values.get("repeats", 1))
    if issues:
        raise SpecError(sort_issues(issues))
    return Study(settings=Settings(**values), source=source, grid=grid, zip=zipped)


def _at(source: str, line: int | None = None) -> Origin:
    return Origin("spec", file=source, line=line)


def _settings(
    tree: Mapping[str, Any], source: str, lines: Mapping[KeyPath, int]
) -> tuple[dict[str, Any], list[SpecIssue]]:
    """The study's valid settings, and every problem with the others."""
    origins = {path: _at(source, lines.get(path)) for path, _ in iter_nodes(tree)}
    merged = merge([Layer(kind="spec", tree=tree, origins=origins, source=source)])
    values, issues = walk_table(Settings, merged, tree)
    if "study_version" not in tree:
        issues.append(
            SpecIssue(
                "study_version", f"missing: start with study_version = {STUDY_VERSION}", _at(source)
            )
        )
    elif values.get("study_version", STUDY_VERSION) != STUDY_VERSION:
        msg = f"this ptycho-spec reads study_version {STUDY_VERSION}"
        issues.append(SpecIssue("study_version", msg, origins[("study_version",)]))
    if "base" not in tree:
        issues.append(
            SpecIssue("base", "missing: name the run spec every point starts from", _at(source))
        )
    return values, issues


def _axes(
    table: Any,
    path: KeyPath,
    source: str,
    lines: Mapping[KeyPath, int],
    issues: list[SpecIssue],
) -> tuple[Axis, ...]:
    """The arrays of a ``[grid]``/``[zip]`` table (nested tables are dotted keys)."""
    origin = _at(source, lines.get(path))
    if not isinstance(table, Mapping):
        issues.append(SpecIssue(".".join(path), f"expected a table (got {show(table)})", origin))
        return ()
    found: list[Axis] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            found += _axes(value, (*path, key), source, lines, issues)
            continue
        at = Origin("set", file=source, line=lines.get((*path, key)))
        dotted = ".".join((*path[1:], key))
        if not isinstance(value, list) or not value:
            got = "an empty array" if value == [] else show(value)
            msg = f"expected a non-empty array of values (got {got})"
            issues.append(SpecIssue(f"{path[0]}.{dotted}", msg, at))
            continue
        found.append(Axis(key=dotted, values=tuple(value), origin=at))
    return tuple(found)


def _conflicts(
    grid: tuple[Axis, ...], zipped: tuple[Axis, ...], *, repeats: int
) -> list[SpecIssue]:
    """Keys varied twice, unequal ``[zip]`` arrays, and a seed both varied and repeated."""
    issues: list[SpecIssue] = []
    seen: list[tuple[str, Axis]] = []
    for table, axis in [("grid", a) for a in grid] + [("zip", a) for a in zipped]:
        parts = axis.key.split(".")
        for other_table, other in seen:
            other_parts = other.key.split(".")
            if parts[: len(other_parts)] == other_parts or other_parts[: len(parts)] == parts:
                msg = f"also varied by [{other_table}] {other.key} (line {other.origin.line})"
                issues.append(SpecIssue(f"{table}.{axis.key}", msg, axis.origin))
        seen.append((table, axis))
    if zipped:
        first = zipped[0]
        for axis in zipped[1:]:
            if len(axis.values) != len(first.values):
                msg = (
                    f"has {len(axis.values)} values but zip.{first.key} has "
                    f"{len(first.values)}; [zip] arrays are taken together"
                )
                issues.append(SpecIssue(f"zip.{axis.key}", msg, axis.origin))
    if repeats > 1:
        issues += [
            SpecIssue(
                f"{table}.{SEED_KEY}",
                "repeats sets run.seed for each repeat; vary run.seed or use repeats, not both",
                axis.origin,
            )
            for table, axis in seen
            if axis.key == SEED_KEY
        ]
    return issues
