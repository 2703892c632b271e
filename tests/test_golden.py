"""Golden pairs: tests/data/specs/valid/*.toml ↔ *.expected, invalid/*.toml ↔ *.err.

Each spec compiles on the fixed test host without data files. Expected files hold the
resolved run with its provenance (valid) or the exit code and exact diagnostics (invalid).
Regenerate them with ``PTYCHO_ACCEPT=1 python -m pytest tests/test_golden.py``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
import tomli_w
from strategies import HOST

from ptycho_spec.compile import compile_run
from ptycho_spec.errors import PtychoSpecError, SpecError
from ptycho_spec.facts import InputFacts
from ptycho_spec.load import default_layer, loads_spec
from ptycho_spec.lock import Lock, dumps_lock

DATA = Path(__file__).parent / "data" / "specs"
ACCEPT = os.environ.get("PTYCHO_ACCEPT") == "1"
REGENERATE = "PTYCHO_ACCEPT=1 python -m pytest tests/test_golden.py"


def _compile(path: Path) -> Lock:
    source = f"{path.parent.name}/{path.name}"
    layers = [default_layer(), loads_spec(path.read_text(encoding="utf-8"), source=source)]
    return compile_run(layers, InputFacts(), HOST)


def _resolved_text(lock: Lock) -> str:
    """Warnings as comments, then the resolved tables and the provenance of the lock."""
    text = dumps_lock(lock)
    data = tomllib.loads(text)
    warnings = "".join(f"# warning: {w.render()}\n" for w in lock.warnings)
    resolved = tomli_w.dumps({k: data[k] for k in ("canonical", "execution")})
    return warnings + resolved + "\n" + text[text.index("[provenance]\n") :]


def _failure_text(path: Path) -> str:
    with pytest.raises(PtychoSpecError) as caught:
        _compile(path)
    error = caught.value
    lines = [i.render() for i in error.issues] if isinstance(error, SpecError) else [str(error)]
    return f"exit {error.exit_code}\n" + "".join(f"{line}\n" for line in lines)


def _check(actual: str, expected_path: Path) -> None:
    if ACCEPT:
        expected_path.write_text(actual, encoding="utf-8")
    if not expected_path.exists():
        pytest.fail(f"{expected_path} is missing; create it with: {REGENERATE}")
    assert actual == expected_path.read_text(encoding="utf-8"), (
        f"golden file differs; if intended: {REGENERATE}"
    )


@pytest.mark.parametrize("path", sorted((DATA / "valid").glob("*.toml")), ids=lambda p: p.stem)
def test_valid(path: Path) -> None:
    """A valid spec resolves to exactly its expected run and provenance."""
    _check(_resolved_text(_compile(path)), path.with_suffix(".expected"))


@pytest.mark.parametrize("path", sorted((DATA / "invalid").glob("*.toml")), ids=lambda p: p.stem)
def test_invalid(path: Path) -> None:
    """An invalid spec fails with exactly its expected exit code and diagnostics."""
    _check(_failure_text(path), path.with_suffix(".err"))
