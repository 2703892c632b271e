"""JSON Schema and Markdown field reference of spec v1, generated from the schema's metadata.

Both are committed under ``specs/`` (``spec-v1.schema.json``, ``spec-v1.md``) and a test keeps
them current. The JSON Schema (draft 2020-12) lets TOML editors complete and check specs; it
admits the deprecated aliases, marked ``deprecated``, because the compiler accepts them too.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from ptycho_spec.convert import describe, flatten, to_toml_tree
from ptycho_spec.schema import SPEC_SECTIONS, SPEC_VERSION, Seeds, Spec, one_of_n
from ptycho_spec.study.spec import STUDY_VERSION, Settings
from ptycho_spec.tree import aliases_of, fields_of, is_section, section_class

_JSON_TYPES: Final = MappingProxyType(
    {bool: "boolean", int: "integer", float: "number", str: "string"}
)
_BOUND_KEYS: Final = MappingProxyType(
    {">": "exclusiveMinimum", ">=": "minimum", "<": "exclusiveMaximum", "<=": "maximum"}
)
_BOUND_SIGNS: Final = MappingProxyType({">": ">", ">=": "≥", "<": "<", "<=": "≤"})
SUPPORTED_N_TEXT: Final = "64, 128 or 256"


def _checks(attribute: attrs.Attribute[Any]) -> tuple[Any, ...]:
    """The validators of a field (attrs wraps a list of them in one ``and_`` validator)."""
    validator = attribute.validator
    return tuple(getattr(validator, "_validators", (validator,) if validator else ()))


def _bounds(attribute: attrs.Attribute[Any]) -> list[Any]:
    """The numeric bounds (``gt``/``ge``/``lt``/``le`` checks: an ``op`` and a ``limit``)."""
    return [c for c in _checks(attribute) if hasattr(c, "op") and hasattr(c, "limit")]


def _default(attribute: attrs.Attribute[Any]) -> Any:
    """A field's default as written in TOML (``None`` → ``"none"``)."""
    default = attribute.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()
    return to_toml_tree({"v": default})["v"] if default is not None else "none"


def _description(attribute: attrs.Attribute[Any]) -> str:
    meta = attribute.metadata
    parts = [meta["doc"]]
    if meta.get("unit"):
        parts.append(f"Unit: {meta['unit']}.")
    if meta.get("auto"):
        parts.append(f'"auto": {meta["auto"]}.')
    if meta.get("aliases"):
        parts.append("Deprecated aliases: " + ", ".join(meta["aliases"]) + ".")
    if meta.get("value_aliases"):
        pairs = (f'"{old}" → "{new}"' for old, new in meta["value_aliases"].items())
        parts.append("Deprecated values: " + ", ".join(pairs) + ".")
    return " ".join(parts)


# --- JSON Schema ------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a spec v1 file."""
    fields = fields_of(Spec)
    properties: dict[str, Any] = {
        "spec_version": {
            "const": SPEC_VERSION,
            "description": fields["spec_version"].metadata["doc"],
        },
        "extends": {
            "type": "array",
            "items": {"type": "string"},
            "default": [],
            "description": fields["extends"].metadata["doc"],
        },
    }
    properties |= {name: _table_schema(section_class(fields[name])) for name in SPEC_SECTIONS}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"ptycho-spec run spec v{SPEC_VERSION}",
        "description": "A PtychoPINN run: generated from ptycho_spec/schema.py; do not edit.",
        "type": "object",
        "required": ["spec_version"],
        "additionalProperties": False,
        "properties": properties,
    }


def _table_schema(cls: type) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name, attribute in fields_of(cls).items():
        properties[name] = (
            _table_schema(section_class(attribute))
            if is_section(attribute)
            else _leaf_schema(attribute)
        )
    for alias, name in aliases_of(cls).items():
        target = {k: v for k, v in properties[name].items() if k not in ("description", "default")}
        properties[alias] = {
            **target,
            "deprecated": True,
            "description": f"Deprecated alias of `{name}`.",
        }
    return {
        "type": "object",
        "description": _doc(cls),
        "additionalProperties": False,
        "properties": properties,
    }


def _doc(cls: type) -> str:
    return inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")


def _leaf_schema(attribute: attrs.Attribute[Any]) -> dict[str, Any]:
    options = list(_type_options(attribute))
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    if attribute.default is not attrs.NOTHING:
        schema = {**schema, "default": _default(attribute)}
    return {**schema, "description": _description(attribute)}


def _type_options(attribute: attrs.Attribute[Any]) -> Iterator[dict[str, Any]]:
    members = flatten(attribute.type)
    literals = [m for m in members if isinstance(m, str)]
    literals += list(attribute.metadata.get("value_aliases", {}))
    for member in members:
        if member in _JSON_TYPES:
            yield _primitive_schema(member, attribute)
    if literals:
        yield {"enum": literals} if len(literals) > 1 else {"const": literals[0]}
    if type(None) in members:
        yield {"const": "none"}


def _primitive_schema(member: type, attribute: attrs.Attribute[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES[member]}
    if member in (int, float):
        schema |= {_BOUND_KEYS[b.op]: b.limit for b in _bounds(attribute)}
    if member is int and one_of_n in _checks(attribute):
        schema = {"enum": [64, 128, 256]}
    return schema


def json_schema_text() -> str:
    """The JSON Schema as committed in ``specs/spec-v1.schema.json``."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


# --- the study file's JSON Schema ---------------------------------------------------------------

# a quoted dotted key in [grid]/[zip]: "model.gridsize" = [1, 2]
_DOTTED_KEY: Final = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$"


def study_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a study v1 file: its settings, and ``[grid]`` and
    ``[zip]`` holding an array of values for any run-spec setting."""
    schema = _table_schema(Settings)
    schema["properties"]["study_version"] = {
        "const": STUDY_VERSION,
        "description": fields_of(Settings)["study_version"].metadata["doc"],
    }
    axes = {
        "grid": "Settings varied over arrays of values; the points are their cartesian product.",
        "zip": "Settings varied together: the i-th values of every array make one combination; "
        "the combinations are crossed with [grid].",
    }
    for name, doc in axes.items():
        schema["properties"][name] = {
            **_axis_schema(Spec, {k: v for k, v in fields_of(Spec).items() if k in SPEC_SECTIONS}),
            "description": doc,
            "patternProperties": {_DOTTED_KEY: {"type": "array", "minItems": 1}},
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"ptycho-spec study v{STUDY_VERSION}",
        "description": "A study over run specs: generated from ptycho_spec/study/spec.py; do not edit.",
        "type": "object",
        "required": ["study_version", "base"],
        "additionalProperties": False,
        "properties": schema["properties"],
    }


def _axis_schema(cls: type, fields: Mapping[str, attrs.Attribute[Any]]) -> dict[str, Any]:
    """A spec table whose every setting takes a non-empty array of its values."""
    properties: dict[str, Any] = {}
    for name, attribute in fields.items():
        if is_section(attribute):
            sub = section_class(attribute)
            properties[name] = _axis_schema(sub, fields_of(sub))
        elif not attribute.metadata.get("lock_only"):
            item = {
                k: v
                for k, v in _leaf_schema(attribute).items()
                if k not in ("default", "description")
            }
            properties[name] = {
                "type": "array",
                "minItems": 1,
                "items": item,
                "description": attribute.metadata["doc"],
            }
    return {
        "type": "object",
        "description": _doc(cls),
        "additionalProperties": False,
        "properties": properties,
    }


def study_schema_text() -> str:
    """The study JSON Schema as committed in ``specs/study-v1.schema.json``."""
    return json.dumps(study_json_schema(), indent=2, ensure_ascii=False) + "\n"


# --- Markdown ---------------------------------------------------------------------------------

_PREAMBLE: Final = f"""# Run spec v{SPEC_VERSION}: field reference

Generated from `ptycho_spec/schema.py` by `ptycho-spec schema --format markdown`; do not edit.
The lock format is described in `lockfile-v1.md`.

A spec is a TOML file with `spec_version = {SPEC_VERSION}` at the top, an optional
`extends = ["base.toml", ...]` (bases merged under this file, in order, relative to it) and the
tables below. Conventions:

* `"auto"`: the compiler decides, by the rule given for the field, and records the value and
  its provenance in the lock.
* `"none"`: TOML has no null; optional fields take the string `"none"`.
* Integers never accept `true`/`false`; numbers accept integers.
* Precedence, lowest first: built-in defaults < each `extends` base < the spec file <
  `PTYCHO__SECTION__FIELD` environment variables < `--set section.field=value`.
* `ptycho-spec validate` checks a spec without opening data files or bundles;
  `ptycho-spec compile` also resolves it against the data and the compiling host.
"""


def markdown() -> str:
    """The Markdown field reference committed as ``specs/spec-v1.md``."""
    fields = fields_of(Spec)
    parts = [_PREAMBLE]
    for name in SPEC_SECTIONS:
        parts += list(_markdown_tables(section_class(fields[name]), name))
    parts.append(
        _markdown_table(
            Seeds,
            "canonical.seeds",
            "Lock only: derived from `run.seed` per purpose as "
            '`sha256("ptycho-spec:{seed}:{purpose}")[:4]` (big-endian) & 0x7FFFFFFF.',
        )
    )
    return "\n".join(parts)


def _markdown_tables(cls: type, name: str) -> Iterator[str]:
    yield _markdown_table(cls, name, _doc(cls))
    for child, attribute in fields_of(cls).items():
        if is_section(attribute):
            yield from _markdown_tables(section_class(attribute), f"{name}.{child}")


def _markdown_table(cls: type, name: str, intro: str) -> str:
    rows = [
        f"| `{field}` | {_md_type(a)} | `{json.dumps(_default(a), ensure_ascii=False)}` | {_description(a)} |"
        for field, a in fields_of(cls).items()
        if not is_section(a)
    ]
    header = ["| key | type | default | description |", "|---|---|---|---|"]
    return "\n".join([f"## [{name}]", "", intro, "", *header, *rows, ""])


def _md_type(attribute: attrs.Attribute[Any]) -> str:
    text = describe(attribute.type)
    ranges = [f"{_BOUND_SIGNS[b.op]} {_number(b.limit)}" for b in _bounds(attribute)]
    if one_of_n in _checks(attribute):
        ranges.append(SUPPORTED_N_TEXT)
    text = f"{text} ({', '.join(ranges)})" if ranges else text
    return text.replace("|", "\\|")


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
