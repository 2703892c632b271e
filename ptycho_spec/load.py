"""Spec files, ``extends`` bases, ``PTYCHO__*`` variables and ``--set`` arguments → layers.

A :class:`Layer` is one source of settings: a raw tree (TOML values as written, deprecated
aliases already rewritten to canonical names) and the origin of every key in it. Layers are
ordered lowest first: built-in defaults, each ``extends`` base (depth first, in the order
listed), the spec file, environment variables, ``--set`` arguments. Nothing here judges values;
``validate.py`` does that on the merged tree.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import tomli_w
from attrs import define, frozen

from ptycho_spec import __version__
from ptycho_spec.convert import show, to_toml_tree
from ptycho_spec.errors import Origin, SpecError, SpecIssue, UsageError
from ptycho_spec.lock import SpecInput
from ptycho_spec.migrate import YAML_SUFFIXES, spec_version_of, upgrade
from ptycho_spec.schema import SPEC_VERSION, Spec
from ptycho_spec.toml_lines import decode_error, key_lines, parse_toml
from ptycho_spec.tree import (
    KeyPath,
    aliases_of,
    dotted,
    fields_of,
    is_section,
    iter_nodes,
    section_class,
    set_in,
)

ENV_PREFIX: Final = "PTYCHO__"
FILE_KEYS: Final = ("spec_version", "extends")  # top-level keys that belong to one file


@frozen(kw_only=True)
class Layer:
    """One source of settings, with the origin of each key path (tables included)."""

    kind: str  # default, extends, spec, env or set
    tree: Mapping[str, Any]
    origins: Mapping[KeyPath, Origin]
    source: str | None = None  # spec and extends layers: the file as named in messages
    file: SpecInput | None = None  # the same file's absolute path and content hash
    extends: tuple[str, ...] = ()  # as written in the file
    issues: tuple[SpecIssue, ...] = ()
    warnings: tuple[SpecIssue, ...] = ()


def load_layers(
    path: str, sets: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> tuple[Layer, ...]:
    """Every layer of a spec file, lowest precedence first."""
    env = env_layer(os.environ if environ is None else environ)
    given = set_layer(sets)
    return (default_layer(), *file_layers(path), *(x for x in (env, given) if x is not None))


def default_layer() -> Layer:
    """The built-in defaults of spec v1."""
    tree = {k: v for k, v in to_toml_tree(Spec()).items() if k not in FILE_KEYS}
    return Layer(
        kind="default", tree=tree, origins={p: Origin("default") for p, _ in iter_nodes(tree)}
    )


# --- files ------------------------------------------------------------------------------------


def file_layers(path: str, kind: str = "spec", chain: tuple[str, ...] = ()) -> list[Layer]:
    """A spec file's layer preceded by the layers of its ``extends`` bases, recursively."""
    absolute = os.path.abspath(path)
    if absolute in chain:
        cycle = " → ".join([*chain[chain.index(absolute) :], absolute])
        raise SpecError([SpecIssue("extends", f"cycle: {cycle}", Origin(kind, file=path))])
    layer = read_spec(path, kind=kind)
    bases: list[Layer] = []
    for entry in layer.extends:
        base = os.path.normpath(os.path.join(os.path.dirname(path), entry))
        if not os.path.isfile(base):
            origin = layer.origins.get(("extends",), Origin(kind, file=path))
            raise SpecError([SpecIssue("extends", f"no such spec file: {base}", origin)])
        bases += file_layers(base, "extends", (*chain, absolute))
    return [*bases, layer]


def read_spec(path: str, *, kind: str = "spec") -> Layer:
    """One spec file (TOML, or PtychoPINN YAML) as a layer; ``extends`` is not followed."""
    raw = _read_bytes(path, kind)
    layer = loads_spec(_decode(raw, path, kind), source=path, kind=kind)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    spec_input = SpecInput(path=os.path.abspath(path), sha256=digest, size=len(raw))
    return attrs.evolve(layer, file=spec_input)


def _read_bytes(path: str, kind: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        issue = SpecIssue("", f"cannot read spec: {exc.strerror}", Origin(kind, file=path))
        raise SpecError([issue]) from None


def _decode(raw: bytes, path: str, kind: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([SpecIssue("", "not UTF-8 text", Origin(kind, file=path))]) from None


def loads_spec(text: str, *, source: str, kind: str = "spec") -> Layer:
    """A spec's text as a layer: parsed, upgraded to the current version, aliases rewritten."""
    raw = _parse(text, source)
    version = spec_version_of(raw, source=source)
    lines = key_lines(text) if not source.endswith(YAML_SUFFIXES) else {}
    notes: tuple[str, ...] = ()
    if version < SPEC_VERSION:
        upgraded = upgrade(raw, version, source=source)
        raw, notes, lines = upgraded.tree, upgraded.notes, {}
    migrated = [
        SpecIssue("", f"spec_version {version} → {SPEC_VERSION}: {n}", Origin(kind, file=source))
        for n in notes
    ]
    extends_origin = Origin(kind, file=source, line=lines.get(("extends",)))
    extends, issues = _extends(raw.get("extends", []), extends_origin)
    tree = {k: v for k, v in raw.items() if k not in FILE_KEYS}
    layer = make_layer(kind, tree, lambda p: Origin(kind, file=source, line=lines.get(p)))
    return attrs.evolve(
        layer,
        source=source,
        extends=extends,
        origins={**layer.origins, ("extends",): extends_origin},
        issues=(*issues, *layer.issues),
        warnings=(*migrated, *layer.warnings),
    )


def migrate_file(path: str) -> str:
    """A spec file's text at the current version (see :func:`migrated_text`)."""
    return migrated_text(_decode(_read_bytes(path, "spec"), path, "spec"), source=path)


def migrated_text(text: str, *, source: str) -> str:
    """A spec's text at the current version: unchanged if current, else upgraded TOML whose
    leading comments list what the migration renamed or dropped."""
    raw = _parse(text, source)
    version = spec_version_of(raw, source=source)
    if version == SPEC_VERSION:
        return text
    upgraded = upgrade(raw, version, source=source)
    header = [
        f"# Migrated from {os.path.basename(source)} (spec_version {version}) by ptycho-spec {__version__}."
    ]
    header += [f"# {note}" for note in upgraded.notes]
    return "\n".join(header) + "\n\n" + tomli_w.dumps(upgraded.tree)


def _parse(text: str, source: str) -> dict[str, Any]:
    if source.endswith(YAML_SUFFIXES):
        return _parse_yaml(text, source)
    try:
        return parse_toml(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = decode_error(exc)
        raise SpecError(
            [SpecIssue("", f"invalid TOML: {message}", Origin("spec", file=source, line=line))]
        ) from None


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    import yaml  # only PtychoPINN configs are YAML; PyYAML comes with lightning

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        # PyYAML's message quotes the offending text on further lines: keep one line.
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(
            [SpecIssue("", f"invalid YAML: {problem}", Origin("spec", file=source, line=line))]
        ) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise SpecError(
            [SpecIssue("", "expected a mapping of settings", Origin("spec", file=source))]
        )
    return data


def _extends(value: Any, origin: Origin) -> tuple[tuple[str, ...], list[SpecIssue]]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return (), [
            SpecIssue("extends", f"expected an array of spec paths (got {show(value)})", origin)
        ]
    return tuple(value), []


# --- aliases ----------------------------------------------------------------------------------


def make_layer(kind: str, tree: Mapping[str, Any], origin_of: Callable[[KeyPath], Origin]) -> Layer:
    """A layer from a raw tree: deprecated key and value aliases rewritten and reported.

    ``origin_of`` gives the origin of a key path as written (before alias rewriting).
    """
    normalizer = _Normalizer(origin_of)
    out = normalizer.table(tree, Spec, (), ())
    return Layer(
        kind=kind,
        tree=out,
        origins=normalizer.origins,
        issues=tuple(normalizer.issues),
        warnings=tuple(normalizer.warnings),
    )


@define
class _Normalizer:
    """Rewrites aliases in one raw tree (local to one :func:`make_layer` call)."""

    origin_of: Callable[[KeyPath], Origin]
    origins: dict[KeyPath, Origin] = attrs.Factory(dict)
    issues: list[SpecIssue] = attrs.Factory(list)
    warnings: list[SpecIssue] = attrs.Factory(list)

    def table(
        self, table: Mapping[str, Any], cls: type | None, new: KeyPath, old: KeyPath
    ) -> dict[str, Any]:
        """A table with canonical key names; ``new``/``old`` are its path after/before."""
        aliases = aliases_of(cls) if cls is not None else {}
        out: dict[str, Any] = {}
        for key, value in table.items():
            name = aliases.get(key, key)
            origin = self.origin_of((*old, key))
            if name != key and name in table:
                msg = f"both {name} and its deprecated alias {key} are set; keep {name}"
                self.issues.append(SpecIssue(dotted((*new, name)), msg, origin))
                continue
            if name != key:
                msg = f"{key} is a deprecated alias; use {dotted((*new, name))}"
                self.warnings.append(SpecIssue(dotted((*new, key)), msg, origin))
            self.origins[(*new, name)] = origin
            attribute = fields_of(cls).get(name) if cls is not None else None
            out[name] = self.value(value, attribute, (*new, name), (*old, key))
        return out

    def value(
        self, value: Any, attribute: attrs.Attribute[Any] | None, new: KeyPath, old: KeyPath
    ) -> Any:
        """A sub-table normalized in turn, or a value with its deprecated spelling replaced."""
        if isinstance(value, Mapping):
            is_table = attribute is not None and is_section(attribute)
            return self.table(value, section_class(attribute) if is_table else None, new, old)
        value_aliases = attribute.metadata.get("value_aliases", {}) if attribute is not None else {}
        if not isinstance(value, str) or value not in value_aliases:
            return value
        canonical = value_aliases[value]
        msg = f"{show(value)} is a deprecated value; use {show(canonical)}"
        self.warnings.append(SpecIssue(dotted(new), msg, self.origin_of(old)))
        return canonical


# --- environment variables and --set ------------------------------------------------------------


def env_layer(environ: Mapping[str, str]) -> Layer | None:
    """``PTYCHO__SECTION__FIELD=value`` variables; names match fields case-insensitively."""
    entries = [
        (name, _env_path(name), environ[name])
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX)
    ]
    return _overrides("env", entries) if entries else None


def _env_path(name: str) -> KeyPath:
    parts = name[len(ENV_PREFIX) :].split("__")
    if not all(parts):
        msg = f"{name}: expected PTYCHO__SECTION__FIELD (parts separated by two underscores)"
        raise UsageError(msg)
    path: list[str] = []
    cls: type | None = Spec
    for part in parts:
        names = (
            {n.lower(): n for n in (*fields_of(cls), *aliases_of(cls))} if cls is not None else {}
        )
        matched = names.get(part.lower(), part.lower())
        attribute = fields_of(cls).get(matched) if cls is not None else None
        cls = section_class(attribute) if attribute is not None and is_section(attribute) else None
        path.append(matched)
    return tuple(path)


def set_layer(sets: Sequence[str]) -> Layer | None:
    """``--set section.field=value`` arguments, in order; a later one may not repeat a key."""
    entries = [(f"--set {arg}", *_set_arg(arg)) for arg in sets]
    return _overrides("set", entries) if entries else None


def _set_arg(arg: str) -> tuple[KeyPath, str]:
    key, sep, raw = arg.partition("=")
    try:
        parsed = parse_toml(f"{key.strip()} = 0") if sep and key.strip() else None
    except tomllib.TOMLDecodeError:
        parsed = None
    if parsed is None:
        msg = f"--set {arg}: expected section.key=value (a TOML key and value)"
        raise UsageError(msg)
    path: list[str] = []
    while isinstance(parsed, dict):
        ((part, parsed),) = parsed.items()
        path.append(part)
    return tuple(path), raw.strip()


def parse_value(raw: str) -> Any:
    """A TOML value (``4``, ``1e5``, ``true``, ``"x"``, ``[1, 2]``), else the bare string."""
    try:
        parsed = parse_toml(f"v = {raw}")
    except tomllib.TOMLDecodeError:
        return raw
    return parsed["v"] if len(parsed) == 1 else raw


def _overrides(kind: str, entries: Iterable[tuple[str, KeyPath, str]]) -> Layer:
    """A layer of single-key overrides; each key's origin names the variable or argument."""
    tree: dict[str, Any] = {}
    details: dict[KeyPath, str] = {}
    leaves: list[KeyPath] = []
    issues: list[SpecIssue] = []
    for detail, path, raw in entries:
        clash = next((p for p in leaves if p[: len(path)] == path or path[: len(p)] == p), None)
        if clash is not None:
            issues.append(
                SpecIssue(
                    dotted(path), f"also set by {details[clash]}", Origin(kind, detail=detail)
                )
            )
            continue
        set_in(tree, path, parse_value(raw))
        leaves.append(path)
        for i in range(1, len(path) + 1):
            details.setdefault(path[:i], detail)
    layer = make_layer(kind, tree, lambda p: Origin(kind, detail=details.get(p)))
    return attrs.evolve(layer, issues=(*issues, *layer.issues))
