"""``ptycho-spec``: the command line. The only place where errors become exit codes.

Exit codes: 0 success, 1 runtime failure (and ``diff`` with differences), 2 invalid spec or
usage, 3 lock verification failure, 4 invalid input data. Diagnostics go to stderr, one line
each; a mistake in a spec never shows a traceback.

Each subcommand is one :class:`Command`: a name, a help line, a function adding its
arguments and a handler returning the exit code. To add one, write the two functions and add
an entry to :data:`COMMANDS`. ``run``, ``resume``, ``export-npz``, ``study`` and ``sweep`` run
something: their handlers are in ``ptycho_spec.commands``, imported only when one of them runs,
and the other commands import neither torch nor lightning. Handlers import what they use when they
run, so that ``--help`` and ``validate`` load no more than they need.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final

from attrs import frozen

from ptycho_spec import __version__
from ptycho_spec.errors import PtychoSpecError, SpecError, SpecIssue, UsageError
from ptycho_spec.lock import Lock


@frozen
class Command:
    """One subcommand."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit code."""
    parser = build_parser(COMMANDS)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except SpecError as exc:
        print_spec_error(exc)
        return exc.exit_code
    except PtychoSpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    """The argument parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="ptycho-spec", description="Declarative, reproducible PtychoPINN runs."
    )
    parser.add_argument("--version", action="version", version=f"ptycho-spec {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _print_issues(issues: Sequence[SpecIssue], prefix: str = "") -> None:
    for issue in issues:
        print(prefix + issue.render(), file=sys.stderr)


def print_spec_error(exc: SpecError) -> None:
    """Every issue of an invalid spec, then the warnings found beside them, on stderr."""
    _print_issues(exc.issues)
    _print_warnings(exc.warnings)


def _print_warnings(warnings: Sequence[SpecIssue]) -> None:
    _print_issues(warnings, prefix="warning: ")


def _add_sets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (TOML value syntax; repeatable), e.g. --set training.nepochs=5",
    )


# --- validate ---------------------------------------------------------------------------------


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "specs", nargs="+", metavar="SPEC", help="spec files (TOML, or PtychoPINN YAML)"
    )
    _add_sets(parser)


def _validate(args: argparse.Namespace) -> int:
    from ptycho_spec.compile import validate_spec

    status = 0
    for path in args.specs:
        try:
            checked = validate_spec(path, args.sets)
        except SpecError as exc:
            print_spec_error(exc)
            status = status or exc.exit_code
            continue
        _print_warnings(checked.warnings)
        print(f"ok: {path}")
    return status


# --- compile ----------------------------------------------------------------------------------


def _compile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    _add_sets(parser)
    parser.add_argument(
        "-o",
        "--output",
        metavar="LOCK",
        help="lock path (default: <spec stem>.lock.toml beside the spec; - for stdout)",
    )


def _compile(args: argparse.Namespace) -> int:
    from ptycho_spec.compile import compile_spec
    from ptycho_spec.lock import dumps_lock, write_lock

    lock = compile_spec(args.spec, args.sets)
    _print_warnings(lock.warnings)
    if args.output == "-":
        sys.stdout.write(dumps_lock(lock))
        return 0
    output = args.output or os.path.splitext(args.spec)[0] + ".lock.toml"
    write_lock(lock, output)
    print(f"wrote {output}", file=sys.stderr)
    return 0


# --- explain ----------------------------------------------------------------------------------


def _explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument("key", metavar="KEY", help="a setting, e.g. model.N or execution.devices")
    _add_sets(parser)


def _explain(args: argparse.Namespace) -> int:
    from ptycho_spec.compile import compile_layers
    from ptycho_spec.explain import explain
    from ptycho_spec.facts import read_host
    from ptycho_spec.load import load_layers
    from ptycho_spec.merge import merge

    layers = load_layers(args.spec, args.sets, os.environ)
    lock = compile_layers(layers, read_host(os.environ))
    _print_warnings(lock.warnings)
    print(explain(args.key, lock, merge(layers).history, source=args.spec))
    return 0


# --- diff -------------------------------------------------------------------------------------


def _diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="a spec or a lock")
    parser.add_argument("b", metavar="B", help="a spec or a lock")


def _diff(args: argparse.Namespace) -> int:
    from ptycho_spec.explain import diff

    a, b = _run_of(args.a), _run_of(args.b)
    lines = diff(a, b)
    for line in lines:
        print(line)
    if not lines:
        print(f"same run ({a.header.run_digest})")
    return 1 if lines else 0


def _run_of(path: str) -> Lock:
    """A lock file as written, or a spec compiled now."""
    from ptycho_spec.compile import compile_spec
    from ptycho_spec.lock import is_lock_file, read_lock

    return read_lock(path) if is_lock_file(path) else compile_spec(path)


# --- schema and migrate -----------------------------------------------------------------------


def _schema_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("json", "markdown"), default="json")
    parser.add_argument(
        "--study", action="store_true", help="the study file's JSON Schema instead (study v1)"
    )


def _schema(args: argparse.Namespace) -> int:
    from ptycho_spec.schema_export import json_schema_text, markdown, study_schema_text

    if args.study:
        if args.format != "json":
            msg = "schema --study: the study format's reference is specs/study-v1.md"
            raise UsageError(msg)
        sys.stdout.write(study_schema_text())
        return 0
    sys.stdout.write(json_schema_text() if args.format == "json" else markdown())
    return 0


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="a PtychoPINN YAML config or an older spec")


def _migrate(args: argparse.Namespace) -> int:
    from ptycho_spec.load import migrate_file

    sys.stdout.write(migrate_file(args.spec))
    return 0


# --- run (the runner: imports torch only when it runs) --------------------------------------


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="SPEC|LOCK", help="a spec (compiled first) or a lock (verified first)"
    )
    _add_sets(parser)
    parser.add_argument(
        "--out", metavar="DIR", help="run directory (default: the lock's run.output_dir)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite a completed run directory")
    _add_drift_flags(parser)


def _run(args: argparse.Namespace) -> int:
    from ptycho_spec.commands.run import run

    return run(args)


def _add_drift_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="environment drift (library versions, CUDA) is an error, not a warning",
    )
    parser.add_argument(
        "--allow-drift",
        dest="allow_drift",
        action="append",
        default=[],
        choices=("data",),
        help="run although data files changed since the lock (recorded in the run directory)",
    )
    parser.add_argument(
        "--data-dir",
        dest="data_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="also look for the lock's data files in DIR, by file name (repeatable; also "
        "PTYCHO_DATA_DIRS); a file counts only with the locked sha256 and size",
    )


# --- verify and resume ------------------------------------------------------------------------


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="LOCK|RUN_DIR", help="a lock, or a run directory")
    _add_drift_flags(parser)


def _verify(args: argparse.Namespace) -> int:
    from ptycho_spec.facts import read_host
    from ptycho_spec.locate import data_dirs, locate_inputs
    from ptycho_spec.lock import read_lock
    from ptycho_spec.verify import check_lock, enforce

    path = _lock_path(args.target)
    lock = read_lock(path)
    located = locate_inputs(
        lock,
        lock_dir=os.path.dirname(os.path.abspath(path)),
        data_dirs=data_dirs(args.data_dirs, os.environ),
    )
    drifts = enforce(
        check_lock(lock, located, read_host(os.environ)),
        strict=args.strict,
        allow=args.allow_drift,
    )
    for drift in drifts:
        print("warning: " + drift.render(), file=sys.stderr)
    for x in located:
        print(f"{x.input.role}: {x.input.path} found at {x.path}")
    print(f"ok: {args.target} (run {lock.header.run_digest})")
    return 0


def _lock_path(target: str) -> str:
    """The lock file named by ``target``: itself, or ``run.lock.toml`` in a run directory."""
    path = os.path.join(target, "run.lock.toml") if os.path.isdir(target) else target
    if not os.path.isfile(path):
        msg = f"{path}: no such lock file"
        raise UsageError(msg)
    return path


def _resume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="an interrupted run directory")
    _add_drift_flags(parser)


def _resume(args: argparse.Namespace) -> int:
    from ptycho_spec.commands.run import resume

    return resume(args)


# --- export-npz (the runner: reads or simulates the data) ------------------------------------


def _export_npz_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="SPEC|LOCK", help="a spec (compiled first) or a lock")
    _add_sets(parser)
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the NPZ to write")
    parser.add_argument(
        "--which", choices=("train", "test"), default="train", help="which scan (default: train)"
    )
    _add_drift_flags(parser)


def _export_npz(args: argparse.Namespace) -> int:
    from ptycho_spec.commands.run import export_npz

    return export_npz(args)


# --- studies: study, sweep (run something), runs, compare -------------------------------------


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", help="a study file (specs/study-v1.md)")
    parser.add_argument(
        "--out", metavar="DIR", help="study directory (default: the study's output_dir)"
    )
    _add_compile_only(parser)


def _add_compile_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="compile every point and write the locks and study.lock.toml; run nothing",
    )


def _study(args: argparse.Namespace) -> int:
    from ptycho_spec.commands.study import study

    return study(args)


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="the base run spec")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="vary a setting over values (crossed with the other --grid keys; values parsed "
        "like --set values), e.g. --grid model.gridsize=1,2",
    )
    parser.add_argument(
        "--zip",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="vary settings together, value by value (crossed with the grid)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each point (seeds)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the study directory")
    _add_compile_only(parser)


def _sweep(args: argparse.Namespace) -> int:
    from ptycho_spec.commands.study import sweep

    return sweep(args)


def _runs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="a study, a run directory, or a folder of runs")


def _runs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ptycho_spec.commands.results import runs_report

    for line in runs_report(Path(args.dir)):
        print(line)
    return 0


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets", nargs="+", metavar="RUN_OR_STUDY", help="run directories or studies"
    )


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ptycho_spec.commands.results import compare_report

    for line in compare_report([Path(t) for t in args.targets]):
        print(line)
    return 0


COMMANDS: Final[tuple[Command, ...]] = (
    Command(
        "validate",
        "check specs without opening data; print every problem",
        _validate_arguments,
        _validate,
    ),
    Command(
        "compile",
        "resolve a spec against its data and this host; write the lock",
        _compile_arguments,
        _compile,
    ),
    Command(
        "explain",
        "show a setting's final value and every layer that set it",
        _explain_arguments,
        _explain,
    ),
    Command(
        "diff",
        "compare two specs or locks setting by setting (exit 1 if they differ)",
        _diff_arguments,
        _diff,
    ),
    Command(
        "schema",
        "print the JSON Schema or the Markdown field reference of spec v1",
        _schema_arguments,
        _schema,
    ),
    Command(
        "migrate",
        "print a PtychoPINN config or older spec upgraded to spec v1",
        _migrate_arguments,
        _migrate,
    ),
    Command(
        "run",
        "compile a spec (or verify a lock) and execute the run",
        _run_arguments,
        _run,
    ),
    Command(
        "export-npz",
        "write a run's training or test scan as a PtychoPINN-contract NPZ",
        _export_npz_arguments,
        _export_npz,
    ),
    Command(
        "verify",
        "find a lock's data files, check them and this machine against it (exit 3 on a difference)",
        _verify_arguments,
        _verify,
    ),
    Command(
        "resume",
        "continue an interrupted training run from its last checkpoint",
        _resume_arguments,
        _resume,
    ),
    Command(
        "study",
        "compile every point of a study, run those not yet complete, write the summary",
        _study_arguments,
        _study,
    ),
    Command(
        "sweep",
        "write a study from --grid/--zip over a spec into --out and run it",
        _sweep_arguments,
        _sweep,
    ),
    Command(
        "runs",
        "list the runs in a directory with their status and headline metrics",
        _runs_arguments,
        _runs,
    ),
    Command(
        "compare",
        "print how runs differ: their settings, then their metrics side by side",
        _compare_arguments,
        _compare,
    ),
)


if __name__ == "__main__":
    sys.exit(main())
