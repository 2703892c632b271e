"""Does a CPU replay reproduce its run bit for bit, under load, with workers, on another host
setting? Each condition replays a lock several times and compares every replay with the
lock's first run: the model bundle's bytes, ``metrics.json``'s bytes and each reconstruction
array's bytes.

Conditions:

* ``plain``: the replay alone on the machine.
* ``busy``: while ``--burners`` processes (default: one per CPU) spin on the CPU, so the run's
  threads are preempted and rescheduled at random.
* ``omp1``: with ``OMP_NUM_THREADS=1`` in the replay's environment: a host whose default
  thread count differs from the compiling host's.
* ``workers``: a lock with two DataLoader worker processes, replayed while the CPU is busy.
* ``unpinned-omp1``: the control. A lock with ``execution.cpu_threads = "none"`` (torch's
  default thread count, what revision-1 locks did), replayed with ``OMP_NUM_THREADS=1``.

Usage::

    python benchmarks/replay_stress.py --repeats 3 --out /tmp/replay_stress.md
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from hardware import host

# lock name → its --set overrides beyond SMALL
LOCKS = {
    "pinned": (),
    "workers": ("execution.num_workers=2",),
    "unpinned": ("execution.cpu_threads=none",),
}
# (name, lock, environment of the replays, busy CPU)
CONDITIONS = (
    ("plain", "pinned", {}, False),
    ("busy", "pinned", {}, True),
    ("omp1", "pinned", {"OMP_NUM_THREADS": "1"}, False),
    ("workers", "workers", {}, True),
    ("unpinned-omp1", "unpinned", {"OMP_NUM_THREADS": "1"}, False),
)
SMALL = (
    "training.nepochs=1",
    "data.n_groups=256",
    "refine.iterations=2",
    "execution.enable_progress_bar=false",
)


def digest(run_dir: Path) -> dict[str, str]:
    """sha256 of the bundle, metrics.json and each reconstruction array of a run directory."""
    files = {
        name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
        for name in ("model.bundle", "metrics.json")
    }
    with np.load(run_dir / "reconstruction.npz", allow_pickle=False) as npz:
        arrays = {
            f"reconstruction.npz:{k}": hashlib.sha256(npz[k].tobytes()).hexdigest()
            for k in npz.files
        }
    return files | arrays


def compile_lock(spec: str, lock: Path, sets: Sequence[str]) -> None:
    cmd = [sys.executable, "-m", "ptycho_spec.cli", "compile", spec, "-o", str(lock)]
    for item in (*SMALL, *sets):
        cmd += ["--set", item]
    subprocess.run(cmd, check=True, capture_output=True)


def run(lock: Path, out: Path, env: Mapping[str, str] = {}) -> float:
    """Replay ``lock`` into ``out`` in a fresh process; wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ptycho_spec.cli", "run", str(lock), "--out", str(out)],
        capture_output=True,
        text=True,
        env=os.environ | dict(env),
        check=False,
    )
    if done.returncode != 0:
        msg = f"run of {lock} failed ({done.returncode}): {done.stderr[-1500:]}"
        raise SystemExit(msg)
    return time.perf_counter() - started


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy_cpu(burners: int) -> Iterator[None]:
    """``burners`` processes spinning until the block ends."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(burners)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="examples/quickstart.toml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", default="replay_stress.md")
    parser.add_argument("--conditions", nargs="+", choices=[c[0] for c in CONDITIONS])
    args = parser.parse_args(argv)
    conditions = [c for c in CONDITIONS if args.conditions is None or c[0] in args.conditions]
    work = Path(tempfile.mkdtemp(prefix="replay_stress_"))
    references = {}
    for name in sorted({lock for _, lock, _, _ in conditions}):
        compile_lock(args.spec, work / f"{name}.lock.toml", LOCKS[name])
        run(work / f"{name}.lock.toml", work / f"{name}-reference")
        references[name] = digest(work / f"{name}-reference")
    lines = [
        f"host: {host()}; {args.repeats} replays per condition; spec {args.spec} "
        f"with {' '.join(SMALL)}",
        "",
        "| condition | replays equal to the first run | differing outputs | median wall (s) |",
        "|---|---|---|---|",
    ]
    for name, lock, env, busy in conditions:
        equal, differing, walls = 0, set(), []
        for i in range(args.repeats):
            out = work / f"{name}-{i}"
            with busy_cpu(args.burners) if busy else nullcontext():
                walls.append(run(work / f"{lock}.lock.toml", out, env))
            got = digest(out)
            changed = {k for k in got if got[k] != references[lock].get(k)}
            equal += not changed
            differing |= changed
        lines.append(
            f"| {name} | {equal}/{args.repeats} | {', '.join(sorted(differing)) or '—'} "
            f"| {sorted(walls)[len(walls) // 2]:.0f} |"
        )
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"run directories: {work}")


if __name__ == "__main__":
    main()
