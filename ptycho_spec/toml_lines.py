"""Line numbers of the keys of a TOML document (``tomllib`` reports none).

:func:`key_lines` maps each key path to the 1-based line that defines it: table headers,
dotted keys and the keys of inline tables. It is a scanner, not a parser: it runs only on text
that ``tomllib`` has already accepted, and it follows strings, multi-line strings and multi-line
arrays only far enough not to mistake their contents for keys. Keys inside arrays (arrays of
inline tables) are not located; callers fall back to the enclosing key's line.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from ptycho_spec.tree import KeyPath

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ML_DELIMS = ('"""', "'''")


@dataclass
class _State:
    """Scanner state carried across lines (local to one :func:`key_lines` call)."""

    table: KeyPath = ()
    ml_string: str | None = None  # the open multi-line string delimiter
    # open brackets of the value being scanned: (bracket, key path of an inline table or None)
    stack: list[tuple[str, KeyPath | None]] = field(default_factory=list)
    last_key: KeyPath | None = None  # the key whose value comes next, for a "{" value
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def record(self, path: KeyPath, lineno: int) -> None:
        for i in range(1, len(path) + 1):
            self.lines.setdefault(path[:i], lineno)


def parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``, reporting arrays or inline tables nested too deeply as the
    ``TOMLDecodeError`` they are: tomllib recurses once per level (Python 3.11-3.13), so a
    hostile file would otherwise end in a ``RecursionError`` traceback."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        msg = "arrays or inline tables nested too deeply"
        raise tomllib.TOMLDecodeError(msg) from None


def key_lines(text: str) -> dict[KeyPath, int]:
    """Key path → 1-based line number for every key and table header found in ``text``."""
    state = _State()
    for lineno, line in enumerate(text.splitlines(), start=1):
        _scan_line(line, lineno, state)
    return state.lines


def decode_error(exc: tomllib.TOMLDecodeError) -> tuple[str, int | None]:
    """Message and line of a TOML syntax error (Python < 3.14 has no ``lineno``)."""
    text = str(exc.args[0]) if exc.args else str(exc)
    match = re.search(r"\s*\(at line (\d+), column \d+\)", text)
    line = getattr(exc, "lineno", None) or (int(match.group(1)) if match else None)
    return (text[: match.start()] if match else text), line


def _scan_line(line: str, lineno: int, state: _State) -> None:
    pos = 0
    if state.ml_string is not None:
        end = line.find(state.ml_string)
        if end < 0:
            return
        state.ml_string = None
        pos = end + 3
    elif not state.stack:
        pos = _skip_ws(line, pos)
        if pos >= len(line) or line[pos] == "#":
            return
        if line[pos] == "[":
            _header(line, pos, lineno, state)
            return
        pos = _key_value(line, pos, lineno, state)
    _scan_value(line, pos, lineno, state)


def _header(line: str, pos: int, lineno: int, state: _State) -> None:
    start = pos + 2 if line.startswith("[[", pos) else pos + 1
    parsed = _parse_key(line, start)
    if parsed is not None:
        state.table = parsed[0]
        state.record(parsed[0], lineno)


def _key_value(line: str, pos: int, lineno: int, state: _State) -> int:
    parsed = _parse_key(line, pos)
    if parsed is None:
        return len(line)
    key, pos = parsed
    state.record((*state.table, *key), lineno)
    state.last_key = (*state.table, *key)
    pos = _skip_ws(line, pos)
    return pos + 1 if pos < len(line) and line[pos] == "=" else len(line)


def _scan_value(line: str, pos: int, lineno: int, state: _State) -> None:
    """Follow brackets, strings and inline-table keys from ``pos`` to the end of the line."""
    while pos < len(line):
        char = line[pos]
        if char == "#":
            return
        if char in "\"'":
            pos = _skip_string(line, pos, state)
        elif char in "[{":
            owner = state.last_key if char == "{" and _in_key_context(state) else None
            state.stack.append((char, owner))
            pos = _maybe_inline_key(line, pos + 1, lineno, state) if char == "{" else pos + 1
        elif char in "]}":
            if state.stack:
                state.stack.pop()
            pos += 1
        elif char == "," and state.stack and state.stack[-1][0] == "{":
            pos = _maybe_inline_key(line, pos + 1, lineno, state)
        else:
            pos += 1


def _in_key_context(state: _State) -> bool:
    """Whether a "{" now opens a table with a known key (not one inside an array)."""
    return not state.stack or (state.stack[-1][0] == "{" and state.stack[-1][1] is not None)


def _maybe_inline_key(line: str, pos: int, lineno: int, state: _State) -> int:
    owner = state.stack[-1][1]
    parsed = _parse_key(line, pos)
    if parsed is None:
        return pos
    key, end = parsed
    end = _skip_ws(line, end)
    if end >= len(line) or line[end] != "=":
        return pos
    state.last_key = (*owner, *key) if owner is not None else None
    if state.last_key is not None:
        state.record(state.last_key, lineno)
    return end + 1


def _skip_string(line: str, pos: int, state: _State) -> int:
    """Position after the string starting at ``pos``; opens a multi-line string if unclosed."""
    for delim in _ML_DELIMS:
        if line.startswith(delim, pos):
            end = line.find(delim, pos + 3)
            if end < 0:
                state.ml_string = delim
                return len(line)
            return end + 3
    quote = line[pos]
    end = pos + 1
    while end < len(line) and line[end] != quote:
        end += 2 if quote == '"' and line[end] == "\\" else 1
    return end + 1


def _parse_key(line: str, pos: int) -> tuple[KeyPath, int] | None:
    """A (dotted) key starting at ``pos``: its parts and the position after it."""
    parts: list[str] = []
    while True:
        pos = _skip_ws(line, pos)
        if pos < len(line) and line[pos] in "\"'":
            end = _skip_string(line, pos, _State())
            parts.append(_unquote(line[pos:end]))
            pos = end
        else:
            match = _BARE.match(line, pos)
            if match is None:
                return None
            parts.append(match.group())
            pos = match.end()
        pos = _skip_ws(line, pos)
        if pos >= len(line) or line[pos] != ".":
            return tuple(parts), pos
        pos += 1


def _unquote(quoted: str) -> str:
    if quoted.startswith("'"):
        return quoted[1:-1]
    try:
        return str(json.loads(quoted))
    except ValueError:  # a TOML-only escape such as \U0001F600: keep the raw text
        return quoted[1:-1]


def _skip_ws(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos
