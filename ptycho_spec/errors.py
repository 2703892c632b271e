"""Errors for people: each class maps to exactly one documented exit code.

Exit codes: 0 ok, 1 runtime failure, 2 invalid spec or usage, 3 lock verification failure,
4 invalid input data. ``cli.py`` is the only place that turns these into exit codes and
one-line diagnostics; nothing else catches them broadly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from attrs import frozen


@frozen
class Origin:
    """Where a value came from.

    ``layer`` is one of: ``default``, ``extends``, ``spec``, ``env``, ``set``, ``inferred``
    (read from a data file), ``derived`` (computed from other settings), ``host`` (the compiling
    machine) or ``bundle`` (the lock inside a model bundle). ``file`` and ``line`` locate it when
    it came from a file; ``detail`` names an environment variable or a ``--set`` argument.
    """

    layer: str
    file: str | None = None
    line: int | None = None
    detail: str | None = None

    def __str__(self) -> str:
        where = self.file or self.detail or ""
        if self.file and self.line:
            where = f"{self.file}:{self.line}"
        return f"{self.layer} {where}".strip()


@frozen
class SpecIssue:
    """One problem with a spec, located: rendered as ``FILE:LINE: section.key: message``."""

    path: str
    message: str
    origin: Origin | None = None

    def render(self) -> str:
        if self.origin is not None and self.origin.file:
            loc = self.origin.file + (f":{self.origin.line}" if self.origin.line else "")
        elif self.origin is not None and self.origin.detail:
            loc = self.origin.detail
        else:
            loc = "<spec>"
        text = f"{loc}: {self.path}: {self.message}" if self.path else f"{loc}: {self.message}"
        # one line per issue, whatever a file name or value holds
        return text.replace("\r", "\\r").replace("\n", "\\n")


class PtychoSpecError(Exception):
    """Base class; ``exit_code`` is what ``ptycho-spec`` exits with."""

    exit_code: ClassVar[int] = 1


class RunError(PtychoSpecError):
    """A run failed for a reason other than its spec, lock or data (exit 1)."""

    exit_code = 1


class SpecError(PtychoSpecError):
    """An invalid spec or command line (exit 2). Holds every issue found, not just the first,
    and the warnings found beside them (deprecated aliases), so a user fixes both at once."""

    exit_code = 2

    def __init__(
        self, issues: Sequence[SpecIssue] | str, *, warnings: Sequence[SpecIssue] = ()
    ) -> None:
        if isinstance(issues, str):
            issues = [SpecIssue(path="", message=issues)]
        self.issues: tuple[SpecIssue, ...] = tuple(issues)
        self.warnings: tuple[SpecIssue, ...] = tuple(warnings)
        super().__init__("\n".join(i.render() for i in self.issues))


class UsageError(SpecError):
    """A command line that cannot be carried out as written (exit 2)."""


class LockError(PtychoSpecError):
    """A lock that fails verification: edited, stale data, foreign version (exit 3)."""

    exit_code = 3


class DataError(PtychoSpecError):
    """Input data, bundle or checkpoint that breaks its contract (exit 4).

    The message names the file and, where it applies, the key or member.
    """

    exit_code = 4

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        where = path or ""
        if key:
            where = f"{where}[{key}]" if where else key
        super().__init__(f"{where}: {message}" if where else message)
