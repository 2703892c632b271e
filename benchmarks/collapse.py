"""Does training end on a flat object? A sweep of seed × batch size × learning rate.

Each setting is one ``ptycho-spec run SPEC --set ...`` (the quickstart by default), in its own
run directory; the table reports the test object's amplitude and phase SSIM and phase MAE of
the PINN's reconstruction, which of the generator's heads the run found flat (``metrics.json``
``flat_heads``; both is the flat object), the generator's least-alive ReLU layer (the share of
its channels positive anywhere on ``ALIVE_GROUPS`` training groups: dead units are how a head
goes flat), the last epoch's training loss and the wall time.
Rows are written to ``--out`` as each run finishes, so an interrupted sweep keeps what it
measured. Usage::

    python benchmarks/collapse.py --out /tmp/collapse_sweep.md
    python benchmarks/collapse.py --seeds 1 --batches 4 --lrs 2e-3 --no-extra   # one run
    python benchmarks/collapse.py --batches 4 8 --lrs 4e-3 8e-3 --set training.nepochs=3

``--set refine.iterations=0`` is passed to every run unless ``--keep-refine``: the sweep is
about training, and refinement would repair a flat PINN object after the fact.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from hardware import cpu_model

# Settings that ended on a flat object before the fix (benchmarks/RESULTS.md), beyond the grid.
EXTRA_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("run.seed=3", "training.batch_size=8", "training.nepochs=10"),
    (
        "run.seed=1",
        "training.batch_size=16",
        "training.learning_rate=4e-3",
        "training.scheduler=warmup_cosine",
        "training.nepochs=12",
    ),
)


ALIVE_GROUPS = 64


def least_alive(run_dir: Path) -> tuple[str, float]:
    """The generator ReLU layer of the run in ``run_dir`` with the smallest share of channels
    positive anywhere on its first ``ALIVE_GROUPS`` training groups: (layer name, share)."""
    from ptycho_spec.locate import compiled_paths
    from ptycho_spec.lock import loads_lock
    from runner.infer.reconstruct import inference_groups, network_input
    from runner.run.execute import net_from_bundle
    from runner.run.prepare import load_scans
    from runner.train.bundle import read_bundle

    lock = loads_lock((run_dir / "run.lock.toml").read_text())
    c = lock.resolved.canonical
    train = load_scans(c, compiled_paths(lock)).train
    net = net_from_bundle(c, read_bundle(run_dir / "model.bundle"), probe=train.probe).eval()
    x, _ = network_input(train, c.model.N)
    groups = torch.from_numpy(inference_groups(c, train, n_groups=None)[:ALIVE_GROUPS])
    shares: dict[str, float] = {}

    def record(name: str):
        def hook(_module, _inputs, out: torch.Tensor) -> None:
            shares[name] = float((out > 0).flatten(2).any(-1).any(0).float().mean())

        return hook

    for name, module in net.generator.named_modules():
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_hook(record(name))
    with torch.inference_mode():
        net.predict_object(x[groups])
    return min(shares.items(), key=lambda item: item[1])


def grid(seeds: Sequence[int], batches: Sequence[int], lrs: Sequence[str]) -> list[tuple[str, ...]]:
    """Every seed × batch size × learning rate as ``--set`` assignments."""
    return [
        (f"run.seed={s}", f"training.batch_size={b}", f"training.learning_rate={lr}")
        for s in seeds
        for b in batches
        for lr in lrs
    ]


def run_one(
    spec: str, sets: Sequence[str], out_dir: Path, *, threads: int | None
) -> tuple[dict, float, int]:
    """Run ``spec`` with ``sets`` into ``out_dir`` (``threads`` torch CPU threads, None: torch's
    default): (metrics.json or {}, wall seconds, exit code)."""
    # this interpreter's ptycho-spec, whether or not its scripts folder is on PATH
    cmd = [sys.executable, "-m", "ptycho_spec.cli", "run", spec, "--out", str(out_dir), "--force"]
    for s in sets:
        cmd += ["--set", s]
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-2000:])
    metrics_file = out_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return metrics, seconds, done.returncode


def row(
    sets: Sequence[str], metrics: dict, seconds: float, code: int, alive: tuple[str, float]
) -> str:
    """One Markdown table row for a finished run; ``alive`` from :func:`least_alive`."""
    label = ", ".join(s.split(".", 1)[1] for s in sets)
    if code != 0:
        return f"| {label} | exit {code} | | | | | | {seconds:.0f} |"
    rec = metrics.get("pinn_reconstruction") or metrics.get("reconstruction") or {}
    amp, phase = rec.get("amplitude", {}), rec.get("phase", {})
    flat = ", ".join(metrics.get("flat_heads", []))
    history = metrics.get("history") or [{}]
    loss = history[-1].get("train_loss", float("nan"))
    return (
        f"| {label} | {amp.get('ssim', float('nan')):.3f} | {phase.get('ssim', float('nan')):.3f}"
        f" | {phase.get('mae', float('nan')):.3f} | {f'**{flat}**' if flat else 'none'}"
        f" | {alive[0]} {alive[1]:.2f} | {loss:.3f} | {seconds:.0f} |"
    )


def header(args: argparse.Namespace) -> str:
    """Hardware, versions and the command, then the table's head."""
    return (
        f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch threads per run: "
        f"{args.threads or torch.get_num_threads()}; torch {torch.__version__}; "
        f"{time.strftime('%Y-%m-%d')}\n\n"
        f"Command: `python benchmarks/collapse.py {' '.join(sys.argv[1:])}`; "
        f"spec `{args.spec}`, common settings `{' '.join(args.common)}`\n\n"
        "| setting | amp SSIM | phase SSIM | phase MAE (rad) | flat heads | least-alive layer "
        "| last train loss | wall (s) |\n|---|---|---|---|---|---|---|---|\n"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default="examples/quickstart.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--lrs", nargs="+", default=["2e-3", "4e-3"])
    parser.add_argument(
        "--no-extra",
        action="store_true",
        help="leave out the settings beyond the grid that collapsed before (seed 3 batch 8 "
        "10 epochs; lr 4e-3 warmup_cosine 12 epochs)",
    )
    parser.add_argument("--keep-refine", action="store_true", help="do not set refine.iterations=0")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS of each run (default: unset)"
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a --set for every run (repeatable), e.g. training.nepochs=3 for a shorter sweep",
    )
    parser.add_argument("--out", default="collapse_sweep.md", help="Markdown table written here")
    parser.add_argument("--workdir", default=None, help="run directories (default: a temp dir)")
    args = parser.parse_args()
    args.common = [*args.sets, *([] if args.keep_refine else ["refine.iterations=0"])]
    return args


def main() -> None:
    args = parse_args()
    settings = grid(args.seeds, args.batches, args.lrs)
    settings += [] if args.no_extra else list(EXTRA_SETTINGS)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="collapse_sweep_"))
    out = Path(args.out)
    out.write_text(header(args))
    for i, sets in enumerate(settings):
        full = (*sets, *args.common)
        metrics, seconds, code = run_one(
            args.spec, full, workdir / f"run{i:02d}", threads=args.threads
        )
        alive = least_alive(workdir / f"run{i:02d}") if code == 0 else ("", float("nan"))
        line = row(sets, metrics, seconds, code, alive)
        with out.open("a") as f:
            f.write(line + "\n")
        print(line, flush=True)


if __name__ == "__main__":
    main()
