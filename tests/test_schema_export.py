"""Tests for ptycho_spec.schema_export: the committed schema and reference are current."""

from __future__ import annotations

import json
from pathlib import Path

from ptycho_spec.schema_export import json_schema, json_schema_text, markdown

SPECS = Path(__file__).parent.parent / "specs"


class TestCommittedFiles:
    def test_json_schema_is_current(self) -> None:
        """specs/spec-v1.schema.json matches the schema classes."""
        committed = (SPECS / "spec-v1.schema.json").read_text(encoding="utf-8")
        assert committed == json_schema_text(), (
            "specs/spec-v1.schema.json is stale; regenerate with: "
            "ptycho-spec schema --format json > specs/spec-v1.schema.json"
        )

    def test_markdown_is_current(self) -> None:
        """specs/spec-v1.md matches the schema classes."""
        committed = (SPECS / "spec-v1.md").read_text(encoding="utf-8")
        assert committed == markdown(), (
            "specs/spec-v1.md is stale; regenerate with: ptycho-spec schema --format markdown > specs/spec-v1.md"
        )


class TestJsonSchema:
    def test_closed_tables(self) -> None:
        """Every table forbids unknown keys (as the compiler does)."""
        schema = json_schema()

        def tables(node: dict[str, object]) -> list[dict[str, object]]:
            found = [node] if node.get("type") == "object" else []
            for child in node.get("properties", {}).values():  # type: ignore[union-attr]
                found += tables(child)
            return found

        assert all(t["additionalProperties"] is False for t in tables(schema))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"

    def test_fields_carry_ranges_defaults_and_aliases(self) -> None:
        """Bounds, defaults, enums and deprecated aliases come from the metadata."""
        training = json_schema()["properties"]["training"]["properties"]
        assert training["batch_size"] == {
            "type": "integer",
            "minimum": 1,
            "default": 16,
            "description": "Samples per batch.",
        }
        assert training["epochs"]["deprecated"] is True
        assert "ReduceLROnPlateau" in training["scheduler"]["enum"]

    def test_serializable(self) -> None:
        """The schema is plain JSON."""
        assert json.loads(json_schema_text()) == json_schema()


class TestMarkdown:
    def test_every_section_and_the_seeds(self) -> None:
        """The reference has one table per spec table, plus the lock-only seeds."""
        text = markdown()
        for name in (
            "run",
            "data",
            "data.simulate",
            "data.ptychodus",
            "model",
            "training",
            "inference",
            "execution",
            "canonical.seeds",
        ):
            assert f"## [{name}]" in text
