"""``run``, ``resume`` and ``export-npz``: parsed arguments → a lock (a spec compiled now, or a
lock verified against its data files and this machine's environment) and where its data files
are (``ptycho_spec.locate``) → the runner.

The command layer (``ptycho_spec.commands``): ``ptycho_spec.cli`` imports this module only when
one of these commands runs, so the compiler's commands never load torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ptycho_spec.errors import UsageError
from ptycho_spec.facts import read_host
from ptycho_spec.locate import compiled_paths, data_dirs, locate_inputs, paths_of
from ptycho_spec.lock import Lock, is_lock_file, read_lock
from ptycho_spec.verify import check_lock, drift_records, enforce


def _lock_for(args: argparse.Namespace) -> tuple[Lock, str, dict[str, str], dict[str, str]]:
    """A lock file verified against its data and this machine, or a spec compiled now; with
    its folder (the spec's, for a spec), the data files where they were found (role → path),
    and the records of the drift the run goes ahead with."""
    folder = os.path.dirname(os.path.abspath(args.target))
    if not is_lock_file(args.target):
        from ptycho_spec.compile import compile_spec

        lock = compile_spec(args.target, args.sets)
        return lock, folder, compiled_paths(lock), {}
    if args.sets:
        msg = "--set cannot change a lock; change the spec and compile it again"
        raise UsageError(msg)
    lock = read_lock(args.target)
    return lock, folder, *_verified(lock, folder, args)


def _verified(
    lock: Lock, folder: str, args: argparse.Namespace
) -> tuple[dict[str, str], dict[str, str]]:
    """Find the data files of ``lock``, read from ``folder``, and check it (exit 3 on what
    ``--strict``/``--allow-drift`` do not allow), warn about the rest; return where the files
    are and the run-directory records of the drift."""
    located = locate_inputs(lock, lock_dir=folder, data_dirs=data_dirs(args.data_dirs, os.environ))
    drifts = check_lock(lock, located, read_host(os.environ))
    for drift in enforce(drifts, strict=args.strict, allow=args.allow_drift):
        print("warning: " + drift.render(), file=sys.stderr)
    return paths_of(located), drift_records(lock, drifts)


def run(args: argparse.Namespace) -> int:
    from runner.run.execute import execute

    lock, folder, paths, records = _lock_for(args)
    for warning in lock.warnings:
        print("warning: " + warning.render(), file=sys.stderr)
    # a relative run.output_dir is the lock's own: it lands beside the lock, wherever that is
    out_dir = Path(args.out) if args.out else Path(folder, lock.resolved.canonical.run.output_dir)
    execute(lock, paths=paths, out_dir=out_dir, force=args.force, records=records)
    return _done(out_dir)


def _done(out_dir: Path) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(f"run complete: {out_dir}", file=sys.stderr)
    return 0


def export_npz(args: argparse.Namespace) -> int:
    """Write the run's ``args.which`` scan as a PtychoPINN-contract NPZ (``runner.interop``)."""
    from runner.interop.export import export_npz as write

    lock, _folder, paths, _records = _lock_for(args)
    write(lock, paths, Path(args.output), which=args.which)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def resume(args: argparse.Namespace) -> int:
    """Continue the interrupted run in ``args.run_dir`` under its own lock, verified first."""
    from runner.run.execute import execute
    from runner.train.resume import resume_checkpoint

    out_dir = Path(args.run_dir)
    lock_file = out_dir / "run.lock.toml"
    if not lock_file.is_file():
        msg = f"{out_dir}: not a run directory (no run.lock.toml)"
        raise UsageError(msg)
    lock = read_lock(lock_file)
    ckpt = resume_checkpoint(out_dir, task=lock.resolved.canonical.run.task)
    paths, records = _verified(lock, str(out_dir.absolute()), args)
    execute(lock, paths=paths, out_dir=out_dir, resume_from=ckpt, records=records)
    return _done(out_dir)
