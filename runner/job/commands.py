"""Handlers of the runner's subcommands; ``ptycho_spec.cli`` imports this module only when one
of them runs, so the compiler's commands never load torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ptycho_spec.errors import UsageError
from ptycho_spec.lock import Lock, is_lock_file, read_lock
from ptycho_spec.verify import verify_inputs


def _lock_for(target: str, sets: Sequence[str]) -> Lock:
    """A lock file verified against its data, or a spec compiled now."""
    if is_lock_file(target):
        if sets:
            msg = "--set cannot change a lock; change the spec and compile it again"
            raise UsageError(msg)
        lock = read_lock(target)
        verify_inputs(lock)
        return lock
    from ptycho_spec.compile import compile_spec

    return compile_spec(target, sets)


def run(args: argparse.Namespace) -> int:
    from runner.job.execute import execute

    lock = _lock_for(args.target, args.sets)
    for warning in lock.warnings:
        print("warning: " + warning.render(), file=sys.stderr)
    out_dir = Path(args.out) if args.out else Path(lock.resolved.canonical.run.output_dir)
    execute(lock, out_dir=out_dir, force=args.force)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(f"run complete: {out_dir}", file=sys.stderr)
    return 0


def export_npz(args: argparse.Namespace) -> int:
    """Write the run's ``args.which`` scan as a PtychoPINN-contract NPZ (``runner.interop``)."""
    from runner.interop.export import export_npz as write

    lock = _lock_for(args.target, args.sets)
    write(lock, Path(args.output), which=args.which)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
