"""Merged raw tree → ``Spec``, reporting every problem at once.

The tree is walked against the schema: an unknown key gets a "did you mean"; each setting is
structured by the converter (strict types) and checked by its own validators, one at a time,
so that one bad value does not hide the next. Every issue carries the origin of its key.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import attrs
from attrs import frozen

from ptycho_spec.convert import describe, show, structure
from ptycho_spec.errors import SpecError, SpecIssue
from ptycho_spec.load import FILE_KEYS
from ptycho_spec.merge import Merged
from ptycho_spec.schema import SPEC_VERSION, Spec
from ptycho_spec.tree import KeyPath, aliases_of, dotted, fields_of, is_section, section_class


def build_spec(merged: Merged) -> Spec:
    """The spec the merged layers describe; ``SpecError`` lists every problem found."""
    spec, issues = walk_spec(merged)
    if issues:
        raise SpecError(sort_issues(issues))
    return spec


def walk_spec(merged: Merged) -> tuple[Spec, list[SpecIssue]]:
    """The spec the merged layers describe and every problem found on the way. A setting
    with a problem keeps its default in the spec, so the cross-field rules can still judge
    the rest in the same pass (``compile.check_layers``)."""
    walk = _Walk(merged, [issue for layer in merged.layers for issue in layer.issues])
    sections = walk.table(Spec, merged.tree, ())
    top = merged.top
    spec = Spec(spec_version=SPEC_VERSION, extends=top.extends if top else (), **sections)
    return spec, walk.issues


def walk_table(
    cls: type, merged: Merged, table: Mapping[str, Any]
) -> tuple[dict[str, Any], list[SpecIssue]]:
    """The structured settings of one top-level table of any schema class (a study file's)
    and every problem found, each located through ``merged``."""
    walk = _Walk(merged, [])
    return walk.table(cls, table, ()), walk.issues


def sort_issues(issues: list[SpecIssue]) -> list[SpecIssue]:
    """Issues in reading order: by file, line, then key (de-duplicated)."""
    unique = {(i.render(), i.path): i for i in issues}.values()
    return sorted(unique, key=lambda i: (_file(i), _line(i), i.path, i.message))


def _file(issue: SpecIssue) -> str:
    return issue.origin.file or issue.origin.detail or "" if issue.origin else ""


def _line(issue: SpecIssue) -> int:
    return issue.origin.line or 0 if issue.origin else 0


@frozen
class _Walk:
    """One walk of a merged tree against the schema, collecting issues as it goes."""

    merged: Merged
    issues: list[SpecIssue]

    def table(self, cls: type, table: Mapping[str, Any], prefix: KeyPath) -> dict[str, Any]:
        """Structured field values of one table; a value with a problem is left out."""
        fields = fields_of(cls)
        values: dict[str, Any] = {}
        for key, raw in table.items():
            path = (*prefix, key)
            attribute = fields.get(key)
            before = len(self.issues)
            if attribute is None or (cls is Spec and key in FILE_KEYS):
                self.issues.append(_unknown(cls, key, path, self.merged))
                continue
            value = (self.section if is_section(attribute) else self.leaf)(attribute, raw, path)
            if len(self.issues) == before or (is_section(attribute) and value is not None):
                values[key] = value
        return values

    def section(self, attribute: attrs.Attribute[Any], raw: Any, path: KeyPath) -> Any:
        """A sub-table's instance from its valid settings, or None when it is no table."""
        if not isinstance(raw, Mapping):
            return self.problem(path, f"expected a table (got {show(raw)})")
        return section_class(attribute)(**self.table(section_class(attribute), raw, path))

    def leaf(self, attribute: attrs.Attribute[Any], raw: Any, path: KeyPath) -> Any:
        """A setting structured by the converter and checked by its own validators."""
        if isinstance(raw, Mapping):
            return self.problem(path, f"expected {describe(attribute.type)} (got a table)")
        try:
            value = structure(raw, attribute.type)
            if attribute.validator is not None:
                attribute.validator(None, attribute, value)
        except ValueError as exc:
            return self.problem(path, str(exc))
        return value

    def problem(self, path: KeyPath, message: str) -> None:
        self.issues.append(_issue(path, message, self.merged))


def _unknown(cls: type, key: str, path: KeyPath, merged: Merged) -> SpecIssue:
    if cls is Spec and key in FILE_KEYS:
        return _issue(path, "may only be set at the top of a spec file", merged)
    names = [n for n in fields_of(cls) if not (cls is Spec and n in FILE_KEYS)]
    close = difflib.get_close_matches(key, [*names, *aliases_of(cls)], n=1, cutoff=0.6)
    if close:
        suggestion = aliases_of(cls).get(close[0], close[0])
        return _issue(path, f'unknown key; did you mean "{suggestion}"?', merged)
    where = f"[{dotted(path[:-1])}]" if path[:-1] else "the top level"
    return _issue(path, f"unknown key; valid keys in {where}: {', '.join(names)}", merged)


def _issue(path: KeyPath, message: str, merged: Merged) -> SpecIssue:
    return SpecIssue(path=dotted(path), message=message, origin=merged.locate(path))
