"""Packaged base specs that generated specs extend or run: the compatible command lines'
(``ptycho_train``, ``ptycho_inference``) and the ptychodus reconstructor's (``ptychodus``)."""

from __future__ import annotations

from pathlib import Path

_FOLDER = Path(__file__).parent


def base_spec(name: str) -> Path:
    """The packaged spec ``<name>.toml``."""
    return _FOLDER / f"{name}.toml"
