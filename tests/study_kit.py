"""Tiny studies for the study tests: a base spec of seconds per point on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

from runspec import write_spec

# 72 px objects: 3 × 3 = 9 training and 9 test patterns (gridsize 2 finds its 4 neighbours)
SMALL = """\
spec_version = 1
extends = ["tiny.toml"]

[data.simulate]
object_size = 72
scan_step_test = 4
"""


def write_base(folder: Path) -> Path:
    """``folder/base.toml``: the runspec tiny train+infer spec, made smaller."""
    write_spec(folder)
    base = folder / "base.toml"
    base.write_text(SMALL)
    return base


def write_study(folder: Path, body: str, *, name: str = "study") -> Path:
    """``folder/<name>.toml``: a study over ``base.toml`` (written too) with ``body`` after
    the header."""
    write_base(folder)
    path = folder / f"{name}.toml"
    path.write_text(f'study_version = 1\nbase = "base.toml"\n{body}')
    return path
