"""Tests for ptycho_spec.toml_lines."""

from __future__ import annotations

import tomllib

from ptycho_spec.toml_lines import key_lines

TEXT = '''# comment
spec_version = 1
extends = [
  "a.toml",  # [not.a.table]
]

[run]
name = "x"  # y = 2
notes = """
fake = 3
[fake]
"""
[data.simulate]
nphotons = 1e9
'quoted.key' = 2
model.N = 64
inline = { a = 1, b = { c = 2 }, d = [ { e = 1 } ] }
  [ "training" ]
nepochs=3
'''


class TestKeyLines:
    def test_locates_headers_and_keys(self) -> None:
        """Table headers, keys, dotted keys and quoted keys get their own lines."""
        tomllib.loads(TEXT)
        lines = key_lines(TEXT)
        assert lines[("spec_version",)] == 2
        assert lines[("run",)] == 7
        assert lines[("run", "name")] == 8
        assert lines[("data", "simulate", "nphotons")] == 14
        assert lines[("data", "simulate", "quoted.key")] == 15
        assert lines[("data", "simulate", "model", "N")] == 16
        assert lines[("training", "nepochs")] == 19

    def test_skips_multiline_strings_and_arrays(self) -> None:
        """Text inside multi-line strings and arrays is not taken for keys."""
        lines = key_lines(TEXT)
        assert ("fake",) not in lines
        assert ("run", "fake") not in lines
        assert ("not",) not in lines
        assert ("run", "y") not in lines

    def test_inline_tables(self) -> None:
        """Keys of inline tables share the line of their table; keys in arrays are skipped."""
        lines = key_lines(TEXT)
        assert lines[("data", "simulate", "inline", "a")] == 17
        assert lines[("data", "simulate", "inline", "b", "c")] == 17
        assert ("data", "simulate", "inline", "d", "e") not in lines

    def test_implicit_tables_take_their_first_key_line(self) -> None:
        """A table created by a dotted key is located at that key."""
        assert key_lines("a.b.c = 1\n")[("a",)] == 1
