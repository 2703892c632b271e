"""``study`` and ``sweep``: compile every point of a study, then launch the points not yet
complete under their current lock, then write the summary.

The study file is read by its absolute path: its path is in every point's lock (provenance),
so the same study compiles to the same locks from any working directory.

Running a study again skips its complete points and reruns failed, interrupted or missing ones;
a point whose lock changed (the study, base spec, data or environment did) runs again. A point
that fails does not stop the others: the study exits 1 once they have finished and the summary
is written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from ptycho_spec import atomic
from ptycho_spec.commands import launch
from ptycho_spec.commands.results import status, write_study_summary
from ptycho_spec.errors import UsageError
from ptycho_spec.facts import read_host
from ptycho_spec.load import parse_value
from ptycho_spec.study.compile import CompiledPoint, compile_study
from ptycho_spec.study.lock import lock_file, log_file, point_dir, write_study
from ptycho_spec.study.spec import STUDY_VERSION, Study, read_study
from ptycho_spec.toml_lines import parse_toml

STUDY_FILE = "study.toml"


def study(args: argparse.Namespace) -> int:
    return run_study(
        read_study(os.path.abspath(args.study)),
        out_dir=Path(args.out) if args.out else None,
        compile_only=args.compile_only,
    )


def sweep(args: argparse.Namespace) -> int:
    """Write ``OUT/study.toml`` from the command line, then run it as ``study`` would."""
    out = Path(args.out)
    text = sweep_text(
        base=os.path.relpath(os.path.abspath(args.spec), os.path.abspath(out)),
        grid=[axis_arg(a, "--grid") for a in args.grid],
        zipped=[axis_arg(a, "--zip") for a in args.zip],
        repeats=args.repeats,
    )
    path = out / STUDY_FILE
    if path.is_file() and path.read_text(encoding="utf-8") != text:
        msg = f"{path} holds another study; run it with: ptycho-spec study {path} (or choose --out)"
        raise UsageError(msg)
    atomic.write_text(path, text)
    return run_study(read_study(os.path.abspath(path)), compile_only=args.compile_only)


def axis_arg(arg: str, flag: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2`` → the key and its values, each parsed as a ``--set`` value is (a TOML
    value, else the bare string); ``KEY=[1, 2],[3, 4]`` gives arrays."""
    key, sep, raw = arg.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip() or not _is_key(key):
        msg = f"{flag} {arg}: expected KEY=V1,V2,... (a dotted setting such as model.gridsize)"
        raise UsageError(msg)
    try:
        return key, parse_toml(f"v = [{raw}]")["v"]
    except tomllib.TOMLDecodeError:
        return key, [parse_value(part.strip()) for part in raw.split(",")]


def _is_key(key: str) -> bool:
    try:
        return parse_toml(f"{key} = 0") is not None
    except tomllib.TOMLDecodeError:
        return False


def sweep_text(
    *,
    base: str,
    grid: Sequence[tuple[str, list[Any]]],
    zipped: Sequence[tuple[str, list[Any]]],
    repeats: int,
) -> str:
    """The study file a ``sweep`` command line stands for; its directory is its own folder."""
    data: dict[str, Any] = {"study_version": STUDY_VERSION, "base": base, "output_dir": "."}
    data["repeats"] = repeats
    for name, axes in (("grid", grid), ("zip", zipped)):
        if axes:
            data[name] = dict(axes)
    return (
        "# Written by ptycho-spec sweep; rerun with: ptycho-spec study <this file>\n"
        + tomli_w.dumps(data)
    )


def run_study(
    study: Study,
    *,
    out_dir: Path | None = None,
    compile_only: bool = False,
    environ: Mapping[str, str] | None = None,
    cluster: str = "slurm",
) -> int:
    """Compile every point, write the locks, launch the points to run, write the summary.

    ``cluster`` is submitit's, for the slurm launcher (``"local"``: jobs as local processes).
    """
    environ = os.environ if environ is None else environ
    out = Path(out_dir if out_dir is not None else study.output_dir)
    launcher = study.settings.launcher
    if launcher.kind == "slurm" and not compile_only:
        launch.check_slurm(cluster)
    compiled, warnings = compile_study(study, environ, read_host(environ))
    for warning in warnings:
        print("warning: " + warning.render(), file=sys.stderr)
    jobs = {c.point.id: _job(out, c) for c in compiled}
    if launcher.kind == "local":
        launch.check_fits(list(jobs.values()), launcher.gpus)
    lock = write_study(out, study, compiled)
    todo = [
        c for c in compiled if status(jobs[c.point.id].run_dir, c.lock.header.digest) != "complete"
    ]
    _say(
        f"study {study.name}: {len(compiled)} points compiled into {out}; {len(compiled) - len(todo)} complete, {len(todo)} to run"
    )
    if compile_only:
        return 0
    outcomes: dict[str, launch.Outcome] = {}
    try:
        with _terminate_as_interrupt():
            outcomes = _launch(study, [jobs[c.point.id] for c in todo], out, environ, cluster)
    finally:  # an interrupted study summarizes what its points left on disk
        launched = {key: outcome.status for key, outcome in outcomes.items()}
        paths = write_study_summary(out, lock, launched, title=f"study {study.name}")
        _say("summary: " + ", ".join(str(p) for p in paths))
    failed = [key for key, outcome in outcomes.items() if outcome.status != "complete"]
    if failed:
        _say(f"{len(failed)} of {len(compiled)} points failed: {', '.join(failed)}")
    return 1 if failed else 0


def _launch(
    study: Study,
    jobs: list[launch.Job],
    out: Path,
    environ: Mapping[str, str],
    cluster: str,
) -> dict[str, launch.Outcome]:
    launcher = study.settings.launcher
    say = _Counter(len(jobs)).say
    if launcher.kind == "slurm":
        folder = out / "slurm"
        return launch.run_slurm(
            jobs, launcher, folder=folder, name=study.name, say=say, cluster=cluster
        )
    return launch.run_local(jobs, gpus=launcher.gpus, environ=environ, say=say)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``timeout``, a scheduler's cancel) stops the study as Ctrl-C does: the running
    points are stopped and the summary is written (the main thread only: Python delivers
    signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _job(out: Path, c: CompiledPoint) -> launch.Job:
    e = c.lock.resolved.execution
    return launch.Job(
        id=c.point.id,
        label=c.point.label,
        lock=lock_file(out, c.point.id),
        run_dir=point_dir(out, c.point.id),
        log=log_file(out, c.point.id),
        devices=int(e.devices),
        num_nodes=e.num_nodes,
        cuda=e.accelerator == "cuda",
    )


class _Counter:
    """Progress lines: ``[2/6] point 001 (model.gridsize=2): complete in 12.3 s``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started: dict[str, int] = {}

    def say(self, job: launch.Job, what: str) -> None:
        number = self.started.setdefault(job.id, len(self.started) + 1)
        label = f" ({job.label})" if job.label else ""
        _say(f"[{number}/{self.total}] point {job.id}{label}: {what}")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
