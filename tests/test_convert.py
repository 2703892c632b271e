"""Tests for ptycho_spec.convert: strict structuring of TOML values."""

from __future__ import annotations

from typing import Literal

import cattrs
import pytest

from ptycho_spec.convert import converter, describe, show, structure, structure_leaf, to_toml_tree
from ptycho_spec.schema import Data, Model, Spec


class TestStructureLeaf:
    def test_int_refuses_bool(self) -> None:
        """TOML tells booleans from integers, so an int field refuses true."""
        with pytest.raises(ValueError, match=r"expected an integer \(got true\)"):
            structure_leaf(True, int)

    def test_int_refuses_float_and_string(self) -> None:
        """No coercion: 4.0 and "4" are not integers."""
        for value in (4.0, "4"):
            with pytest.raises(ValueError, match="expected an integer"):
                structure_leaf(value, int)

    def test_float_takes_int(self) -> None:
        """An integer is a number (TOML writes 1 for 1.0) and becomes a float."""
        value = structure_leaf(3, float)
        assert value == 3.0
        assert isinstance(value, float)

    def test_none_string_is_none_for_optional(self) -> None:
        """ "none" stands for None where a field is optional."""
        assert structure_leaf("none", int | None) is None

    def test_none_string_is_a_string_for_str(self) -> None:
        """A plain string field keeps "none" as text."""
        assert structure_leaf("none", str) == "none"

    def test_literal_lists_choices_and_suggests(self) -> None:
        """A misspelt choice names the allowed values and the closest one."""
        with pytest.raises(ValueError) as caught:
            structure_leaf("adan", Literal["adam", "adamw", "sgd"])
        assert (
            str(caught.value)
            == 'must be one of "adam", "adamw", "sgd" (got "adan"); did you mean "adam"?'
        )

    def test_union_with_literals(self) -> None:
        """An int-or-keyword field takes both and names both when refusing."""
        tp = int | Literal["all", "auto"]
        assert structure_leaf("all", tp) == "all"
        assert structure_leaf(12, tp) == 12
        with pytest.raises(ValueError, match=r'expected an integer, "all" or "auto" \(got 1.5\)'):
            structure_leaf(1.5, tp)

    def test_tuple_of_strings(self) -> None:
        """Arrays structure item by item."""
        assert structure_leaf(["a", "b"], tuple[str, ...]) == ("a", "b")
        with pytest.raises(ValueError, match="expected a string"):
            structure_leaf(["a", 1], tuple[str, ...])


class TestStructure:
    def test_forbids_extra_keys(self) -> None:
        """The converter is strict about unknown keys in tables."""
        with pytest.raises(cattrs.BaseValidationError) as caught:
            structure({"gridsize": 1, "gridsiz": 2}, Model)
        assert any(
            "extra fields" in m and "gridsiz" in m for m in cattrs.transform_error(caught.value)
        )

    def test_is_built_once(self) -> None:
        """One converter per process."""
        assert converter() is converter()


class TestDescribe:
    def test_optional_number_with_auto(self) -> None:
        """The description lists types, keywords and "none" in a fixed order."""
        assert describe(float | Literal["auto"] | None) == 'a number, "auto" or "none"'

    def test_literal_only(self) -> None:
        """A pure choice reads "one of ..."."""
        assert describe(Literal["a", "b"]) == 'one of "a", "b"'


class TestShow:
    def test_renders_like_toml(self) -> None:
        """Values render as a TOML reader would write them."""
        assert [show(True), show("x"), show(2), show({}), show([1])] == [
            "true",
            '"x"',
            "2",
            "a table",
            "an array",
        ]


class TestToTomlTree:
    def test_none_and_tuples(self) -> None:
        """None becomes "none" and tuples become lists, so tomli-w can write the result."""
        tree = to_toml_tree(Spec(extends=("a.toml",)))
        assert tree["extends"] == ["a.toml"]
        assert tree["data"]["source"] == "none"
        assert to_toml_tree(Data())["simulate"]["object"] == "lines"
