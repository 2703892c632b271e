"""How the refinement's step rules score: rPIE α × step schedule × starting object, on the
quality suite's saved cases (``benchmarks/RESULTS.md``, "Refinement steps").

Reads what ``benchmarks/quality.py --out DIR`` left in ``DIR/<case>/``: ``data.npz`` (patterns,
positions, the initial probe, the truth) and ``run/reconstruction.npz`` (the PINN's stitched
object and weight). Each setting calls ``runner.refine.engine.refine`` directly (batch 32, the
probe refined on the wrong-probe cases, as the suite's spec does) with ``engine.ALPHA`` and the
schedule replaced, and scores the result as the suite does (``quality.score``). Starts:
``pinn`` (every pixel the PINN's patches covered), ``lit`` (the runner's rule,
``stage.starting_object``) and ``flat``. Usage::

    python benchmarks/quality.py --out /tmp/ptycho-quality      # once, for the saved cases
    python benchmarks/refine_steps.py --out /tmp/ptycho-quality --cases cells anchor \\
        --alphas 0.1 0.15 0.2 --schedules shrinking constant --starts lit flat
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import quality  # noqa: E402  (the repository root on the path first)
from runner.infer.reconstruct import Reconstruction  # noqa: E402
from runner.refine import engine  # noqa: E402
from runner.refine.stage import starting_object  # noqa: E402


def start_object(kind: str, rec: np.lib.npyio.NpzFile) -> np.ndarray:
    """The object refinement starts from: ``(H, W)`` complex64."""
    obj, weight = rec["pinn_object"], rec["pinn_weight"]
    if kind == "lit":
        pinn = Reconstruction(
            obj=obj,
            weight=weight,
            x_px=rec["pinn_x_px"],
            y_px=rec["pinn_y_px"],
            truth=None,
            input_scale=1.0,
        )
        return starting_object(pinn)
    if kind == "pinn":
        covered = weight > 0
        return np.where(covered, obj, np.abs(obj[covered]).mean()).astype(np.complex64)
    return np.ones(obj.shape, np.complex64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the quality suite's --out")
    parser.add_argument("--cases", nargs="+", default=[c.name for c in quality.CASES])
    parser.add_argument("--alphas", type=float, nargs="+", default=[engine.ALPHA])
    parser.add_argument(
        "--schedules", nargs="+", choices=("shrinking", "constant"), default=["shrinking"]
    )
    parser.add_argument("--starts", nargs="+", choices=("lit", "pinn", "flat"), default=["lit"])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="minibatch order")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shrinking = engine.step_scale
    print("| case | α | schedule | start | amp SSIM | phase SSIM | phase MAE (rad) | NLL | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.cases:
        case = next(c for c in quality.CASES if c.name == name)
        data = np.load(args.out / name / "data.npz")
        rec = np.load(args.out / name / "run" / "reconstruction.npz")
        truth, amplitude = data["objectGuess"], data["diff3d"].astype(np.float32)
        x, y = data["xcoords"].astype(np.float64), data["ycoords"].astype(np.float64)
        region = quality.scanned_region(
            x, y, truth.shape, quality.lit_margin(quality.true_probe(case))
        )
        measured = engine.Measurements(
            amplitude=torch.from_numpy(amplitude),
            valid=None,
            photons_per_unit=engine.photons_per_unit(amplitude, float(data["nphotons"])),
        )
        for alpha in args.alphas:
            for schedule in args.schedules:
                for start in args.starts:
                    engine.ALPHA = alpha
                    engine.step_scale = shrinking if schedule == "shrinking" else _constant
                    began = time.perf_counter()
                    result = engine.refine(
                        torch.from_numpy(start_object(start, rec)),
                        torch.from_numpy(data["probeGuess"]),
                        torch.from_numpy(x),
                        torch.from_numpy(y),
                        measured,
                        iterations=args.iterations,
                        batch_size=32,
                        update_probe=case.initial_probe == "wrong",
                        update_positions=False,
                        seed=args.seed,
                    )
                    s = quality.score(result.object.numpy(), truth, region)
                    print(
                        f"| {name} | {alpha} | {schedule} | {start} | {s['amp_ssim']:.3f} | "
                        f"{s['phase_ssim']:.3f} | {s['phase_mae']:.3f} | {result.nll[-1]:.5g} | "
                        f"{time.perf_counter() - began:.0f} |",
                        flush=True,
                    )


def _constant(iteration: int, iterations: int) -> float:
    return 1.0


if __name__ == "__main__":
    main()
