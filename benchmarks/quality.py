"""Reconstruction quality: PtychoPINN alone, PINN + physics refinement, and pty-chi LSQML, side
by side on simulated cases with a known truth and on the real Siemens-star scan.

Each simulated case draws Poisson-noisy patterns (``runner.data.simulate.simulate_scan``) of
one object under one probe, writes them as an NPZ in the data contract (``probeGuess`` = the
probe a solver starts from, ``objectGuess`` = the truth) and reconstructs the same scan three
ways:

* ``ptycho-spec run`` of a spec written here: self-supervised training on the scan, then
  ``train+infer`` on the same file. ``reconstruction.npz`` ``pinn_object`` is the PINN's
  stitched object, ``object`` the refined one (``--refine`` iterations of ``[refine]``, with
  probe refinement where the initial probe is wrong); with ``--refine 0`` both are the PINN's.
  Where the initial probe is wrong, the same spec runs once more with
  ``training.calibrate_probe`` and no refinement: the PINN trained on a calibrated probe.
* pty-chi LSQML (``benchmarks/ptychi_reference.py``) from a flat object, with the probe held
  fixed (true initial probe) or refined (wrong initial probe).

Every reconstruction is scored the same way: registered to the truth (sub-pixel
cross-correlation; shifts under 0.1 px or over 8 px are not applied), then
``runner.metrics.evaluate`` (amplitude rescaled to the truth's mean, the relative phase offset
and ramp and then a phase plane removed, SSIM, MAE, FRC; FRC50 read from ring 1 on, see
``frc50``) over the scanned
region: the positions' bounding box widened by how far the true probe lights (``lit_margin``:
N/4, or less for a narrower probe), where every method has data. The case axes are the object (lines, star, cells), the probe (LCLS
Run1084, disk), the scan step (overlap) and the initial probe (true, or defocused by Fresnel
propagation so that only probe refinement recovers it).

The Siemens star (``../shared/data/siemens_star_tike.npz``, real counts, no truth) runs
``examples/siemens_star.toml`` and is scored against pty-chi's 60-epoch LSQML reconstruction
with probe refinement, registered the same way, over the positions' bounding box.

    python benchmarks/quality.py --list                 # the cases
    python benchmarks/quality.py --cases anchor --refine 0 --epochs 2   # a smoke run
    python benchmarks/quality.py                        # every case and the Siemens star
    python benchmarks/quality.py --accelerator cuda     # PINN, refinement and pty-chi on a GPU
    python benchmarks/quality.py --skip-pinn            # simulate and run pty-chi only

Needs pty-chi (``pip install -e ".[bench]"``) and ../shared/data. Writes under ``--out`` one
folder per case (the NPZ, the spec, the run directory, ``ptychi.npz``, ``montage.png``,
``scores.json``) and ``quality.md``, the table for ``benchmarks/RESULTS.md``. A pty-chi
result in ``--out`` computed with the same settings is reused (its wall time marked
"cached") unless ``--fresh-ptychi``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from attrs import asdict, evolve, frozen

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import objects  # noqa: E402  (the repository root on the path first)
from benchmarks.hardware import host  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RUN1084 = SHARED / "run1084_lcls_xpp.npz"
SIEMENS_SPEC = ROOT / "examples" / "siemens_star.toml"
SIEMENS_DATA = SHARED / "siemens_star_tike.npz"
SIEMENS_REFERENCE_EPOCHS = 60

N = 64
OBJECT_SIZE = 192  # px: a step-6 raster holds 22² = 484 patterns, a step-12 raster 11² = 121
PROBE_SCALE = 4.0  # model.probe_scale's default: the simulation's probe normalization
# λz/Δx² of the wrong initial probe (``objects.defocus``), per probe: the LCLS probe's fine
# structure (spectral rms radius 0.27 cycles/px) decorrelates after 10 px (|⟨P, P_z⟩| = 0.26,
# the amplitude still alike); the smooth disk (0.04 cycles/px) needs 100 px to change shape.
DEFOCUS_PX = {"lcls": 10.0, "disk": 100.0}
# The PINN's training: one pattern per sample, small batches. At 8 epochs this beat gridsize 2
# (batch 16, lr 2e-3) on six of the eight cases, the star by 0.53 amplitude SSIM
# (benchmarks/RESULTS.md, "Gridsize 1 and the full window").
PINN_TRAINING = {"gridsize": 1, "batch_size": 4, "learning_rate": 4e-3}
SHIFT_FLOOR_PX = 0.1  # registration shifts below this are noise, not misregistration
# Solvers share the positions' frame; probe refinement may drift the object by a few pixels,
# but a larger "shift" is the cross-correlation of a failed reconstruction, not applied.
SHIFT_CAP_PX = 8.0


@frozen(kw_only=True)
class Case:
    """One simulated reconstruction problem."""

    name: str
    object: str  # lines | star | cells
    probe: str  # lcls | disk
    step: int  # px between raster positions
    initial_probe: str  # true | wrong (defocused by DEFOCUS_PX[probe])
    seed: int = 1


CASES: tuple[Case, ...] = (
    Case(name="anchor", object="lines", probe="lcls", step=6, initial_probe="true"),
    Case(name="lines-step12", object="lines", probe="lcls", step=12, initial_probe="true"),
    Case(name="lines-disk", object="lines", probe="disk", step=6, initial_probe="true"),
    Case(name="lines-wrongprobe", object="lines", probe="lcls", step=6, initial_probe="wrong"),
    Case(name="star", object="star", probe="lcls", step=6, initial_probe="true"),
    Case(name="star-wrongprobe", object="star", probe="lcls", step=6, initial_probe="wrong"),
    Case(name="cells", object="cells", probe="lcls", step=6, initial_probe="true"),
    Case(name="cells-disk-step12", object="cells", probe="disk", step=12, initial_probe="true"),
)

SPEC = """\
spec_version = 1

[run]
name = "{name}"
task = "train+infer"
seed = {seed}

[data]
source = "npz"
train_file = "{npz}"
test_file = "{npz}"
measurement = "amplitude"
n_groups = "all"

[model]
N = {n}
gridsize = {gridsize}
n_filters_scale = 1

[training]
nepochs = {epochs}
batch_size = {batch_size}
learning_rate = {learning_rate}

[inference]
stitch = "probe"

[refine]
iterations = {refine}
probe = {refine_probe}

[execution]
accelerator = "{accelerator}"
enable_progress_bar = false
"""


# --- simulation ---------------------------------------------------------------------------


def true_object(case: Case) -> np.ndarray:
    """The case's ``(OBJECT_SIZE, OBJECT_SIZE)`` complex64 truth."""
    from runner.data.simulate import lines_object

    if case.object == "lines":
        return lines_object(OBJECT_SIZE, seed=case.seed)
    if case.object == "star":
        return objects.siemens_star(OBJECT_SIZE)
    return objects.cells(OBJECT_SIZE, seed=case.seed)


def true_probe(case: Case) -> np.ndarray:
    """The probe the patterns are simulated with: ``(N, N)`` complex64."""
    from runner.data.simulate import disk_probe

    if case.probe == "disk":
        return disk_probe(N)
    with np.load(RUN1084, allow_pickle=False) as data:
        return data["probeGuess"].astype(np.complex64)


def initial_probe(case: Case, probe: np.ndarray) -> np.ndarray:
    """What the solvers start from: the true probe, or it defocused."""
    return probe if case.initial_probe == "true" else objects.defocus(probe, DEFOCUS_PX[case.probe])


def write_case_npz(case: Case, folder: Path, *, nphotons: float):
    """Simulate the case and write its NPZ; returns the ``Scan`` with the initial probe."""
    from runner.data.npz import write_npz
    from runner.data.simulate import raster_positions, simulate_scan

    truth, probe = true_object(case), true_probe(case)
    x, y = raster_positions(OBJECT_SIZE, N, case.step)
    scan = simulate_scan(
        truth, probe, x, y, nphotons=nphotons, probe_scale=PROBE_SCALE, noise_seed=case.seed + 100
    )
    scan = evolve(scan, probe=initial_probe(case, probe), source=f"quality case {case.name}")
    write_npz(scan, folder / "data.npz", nphotons=nphotons)
    return scan


# --- the three reconstructions ------------------------------------------------------------


def run_spec(
    spec: Path, out: Path, *, overrides: Sequence[str] = (), log: Path, threads: int
) -> tuple[dict, float, dict]:
    """``ptycho-spec run SPEC --out OUT --force`` with ``--set`` overrides and ``threads`` torch
    threads; (metrics, wall s of the command, the run's own ``timing.toml``)."""
    cmd = [sys.executable, "-m", "ptycho_spec.cli", "run", str(spec), "--out", str(out), "--force"]
    for item in overrides:
        cmd += ["--set", item]
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    with log.open("w") as stream:
        done = subprocess.run(cmd, stdout=stream, stderr=subprocess.STDOUT, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        msg = f"{' '.join(cmd)} exited {done.returncode}; see {log}"
        raise RuntimeError(msg)
    timing = tomllib.loads((out / "timing.toml").read_text())
    return json.loads((out / "metrics.json").read_text()), wall, timing


def pinn_objects(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(PINN's own object, final object) of a run directory, both ``(H, W)`` complex64."""
    with np.load(run_dir / "reconstruction.npz", allow_pickle=False) as rec:
        final = rec["object"]
        pinn = rec["pinn_object"] if "pinn_object" in rec.files else final
    return pinn, final


def run_pinn(
    case: Case, folder: Path, *, args: argparse.Namespace, n_patterns: int
) -> tuple[np.ndarray, np.ndarray, float, dict]:
    """Train, reconstruct and refine through ``ptycho-spec run``: (PINN, PINN + refine, wall
    s of the command, the run's ``timing.toml``)."""
    epochs = max(1, math.ceil(args.epochs * args.anchor_patterns / n_patterns))
    spec = folder / "run.toml"
    spec.write_text(
        SPEC.format(
            name=case.name,
            seed=case.seed,
            npz=(folder / "data.npz").as_posix(),
            n=N,
            epochs=epochs,
            refine=args.refine,
            refine_probe=str(case.initial_probe == "wrong" and args.refine > 0).lower(),
            accelerator=args.accelerator,
            **PINN_TRAINING,
        )
    )
    _, wall, timing = run_spec(spec, folder / "run", log=folder / "run.log", threads=args.threads)
    pinn, final = pinn_objects(folder / "run")
    return pinn, final, wall, timing


CALIBRATED = "PINN, probe calibrated"
CALIBRATION_PASSES = 20  # star-wrongprobe: 2 s on one thread, the probe 0.018 from the truth


def run_calibrated(
    case: Case, folder: Path, *, args: argparse.Namespace
) -> tuple[np.ndarray, dict]:
    """The case's PINN run again with ``training.calibrate_probe`` and no refinement: (its
    object, its ``timing.toml``). Only for a wrong initial probe, which training at gridsize 1
    cannot correct."""
    overrides = (
        f"training.calibrate_probe={CALIBRATION_PASSES}",
        "refine.iterations=0",
        "refine.probe=false",
    )
    out = folder / "run-calibrated"
    _, _, timing = run_spec(
        folder / "run.toml",
        out,
        overrides=overrides,
        log=folder / "run-calibrated.log",
        threads=args.threads,
    )
    return pinn_objects(out)[0], timing


def run_ptychi(
    scan, *, canvas: tuple[int, int], epochs: int, refine_probe: bool, args: argparse.Namespace
):
    """pty-chi LSQML on ``scan`` (its probe the initial one), on the ``canvas`` frame."""
    from benchmarks.ptychi_reference import lsqml

    return lsqml(
        scan.amplitude,
        scan.x_px,
        scan.y_px,
        scan.probe,
        canvas,
        epochs=epochs,
        batch_size=args.ptychi_batch,
        refine_probe=refine_probe,
        valid_mask=scan.valid_mask,
        device=args.accelerator,
    )


# --- scoring ------------------------------------------------------------------------------


def scanned_region(
    x_px: np.ndarray, y_px: np.ndarray, shape: tuple[int, int], margin: int
) -> np.ndarray:
    """``(H, W)`` float64: 1 on the positions' bounding box widened by ``margin`` px, else 0."""
    region = np.zeros(shape)
    m = margin
    r0, r1 = max(0, int(np.floor(y_px.min())) - m), min(shape[0], int(np.ceil(y_px.max())) + m)
    c0, c1 = max(0, int(np.floor(x_px.min())) - m), min(shape[1], int(np.ceil(x_px.max())) + m)
    region[r0:r1, c0:c1] = 1.0
    return region


LIT_FRACTION = 0.1  # of the probe's peak intensity: dimmer pixels were not measured


def lit_margin(probe: np.ndarray) -> int:
    """Widening of the positions' bounding box that the scored region takes: N/4, or less when
    ``probe (N, N)`` puts less than ``LIT_FRACTION`` of its peak intensity that far from the
    position (patch pixel N/2). The disk probe (radius ≈ 0.17·N) lights 13 px at N = 64; beyond
    that no pattern measured the object, and each method's object is its fill value there."""
    intensity = np.abs(probe) ** 2
    n = probe.shape[-1]
    rows, cols = np.nonzero(intensity >= LIT_FRACTION * intensity.max())
    reach = np.hypot(rows - n / 2, cols - n / 2).max()
    return min(n // 4, int(np.ceil(reach)))


def register(pred: np.ndarray, reference: np.ndarray, region: np.ndarray):
    """``pred`` moved onto ``reference`` (sub-pixel cross-correlation of the two complex fields
    less their means, over ``region``'s bounding box; a shift of ``SHIFT_FLOOR_PX`` to
    ``SHIFT_CAP_PX``): (aligned ``(H, W)`` complex64, applied shift (dy, dx) px). Plain rather
    than phase correlation: phase correlation weights every frequency alike, so on a blurred or
    weak-contrast object its peak is the noise's (7 px for the PINN and 40 px for pty-chi on
    cells-disk-step12, objects drawn in the positions' frame). The phase offset and ramp are
    left to the scoring and the montage, which both remove them
    (``runner.metrics.match_phase``)."""
    import torch
    from skimage.registration import phase_cross_correlation

    from runner.physics.shift import translate

    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    ref, moving = reference[box], pred[box]
    shift, _, _ = phase_cross_correlation(
        ref - ref.mean(), moving - moving.mean(), upsample_factor=20, normalization=None
    )
    dy, dx = float(shift[0]), float(shift[1])
    if SHIFT_FLOOR_PX <= max(abs(dy), abs(dx)) <= SHIFT_CAP_PX:
        moved = translate(torch.from_numpy(pred.astype(np.complex128)), torch.tensor([dx, dy]))
        pred = moved.numpy()
    else:
        dy = dx = 0.0
    return pred.astype(np.complex64), (dy, dx)


def score(pred: np.ndarray, truth: np.ndarray, region: np.ndarray) -> dict:
    """Registered scores of ``pred`` against ``truth`` (``runner.metrics.evaluate``)."""
    from runner.metrics import evaluate

    aligned, shift = register(pred, truth, region)
    m = evaluate(aligned, truth, weight=region)
    return {
        "amp_ssim": m.amplitude.ssim,
        "phase_ssim": m.phase.ssim,
        "amp_mae": m.amplitude.mae,
        "phase_mae": m.phase.mae,
        "amp_frc50": m.amplitude.frc50,
        "phase_frc50": m.phase.frc50,
        "shift_px": shift,
        "aligned": aligned,
    }


def save_montage(
    path: Path,
    title: str,
    truth: np.ndarray,
    panels: dict[str, np.ndarray],
    region: np.ndarray,
    *,
    reference_name: str = "truth",
) -> None:
    """Amplitude (top) and phase (bottom) of the truth and each aligned reconstruction, cropped
    to the scored region, amplitude rescaled to the truth's mean and phase planes removed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from runner.run.outputs import display_images

    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    shown = {reference_name: display_images(truth, region, truth)}
    shown |= {name: display_images(obj, region, truth) for name, obj in panels.items()}
    fig = Figure(figsize=(3.2 * len(shown), 6.6))
    for col, (name, images) in enumerate(shown.items()):
        for row, (channel, cmap) in enumerate((("amplitude", "gray"), ("phase", "viridis"))):
            image, reference = images[channel]
            data = reference if name == reference_name else image
            ax = fig.add_subplot(2, len(shown), row * len(shown) + col + 1)
            low, high = np.percentile(reference[box], [0.5, 99.5])  # past outlier pixels
            ax.imshow(
                data[box], cmap=cmap, vmin=float(low), vmax=float(high), interpolation="nearest"
            )
            ax.set_title(f"{name}: {channel}", fontsize=9)
            ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)


# --- one case, the star, the table --------------------------------------------------------


def run_case(case: Case, args: argparse.Namespace) -> dict:
    folder = args.out / case.name
    folder.mkdir(parents=True, exist_ok=True)
    scan = write_case_npz(case, folder, nphotons=args.nphotons)
    truth = scan.object
    region = scanned_region(scan.x_px, scan.y_px, truth.shape, lit_margin(true_probe(case)))
    wrong = case.initial_probe == "wrong"
    row: dict = {"case": asdict(case), "patterns": len(scan)}
    objects_by_method = {}
    if not args.skip_pinn:
        pinn, final, row["pinn_wall_s"], row["pinn_timing"] = run_pinn(
            case, folder, args=args, n_patterns=len(scan)
        )
        objects_by_method |= {"PINN": pinn, "PINN + refine": final}
        if wrong:
            objects_by_method[CALIBRATED], row["calibrated_timing"] = run_calibrated(
                case, folder, args=args
            )
    key = {"case": asdict(case), "nphotons": args.nphotons}
    ref, row["ptychi_wall_s"], row["ptychi_cached"] = cached_ptychi(
        folder,
        scan,
        key=key,
        canvas=truth.shape,
        epochs=args.ptychi_epochs,
        refine_probe=wrong,
        args=args,
    )
    objects_by_method["pty-chi"] = ref
    scores = {name: score(obj, truth, region) for name, obj in objects_by_method.items()}
    save_montage(
        folder / "montage.png",
        f"{case.name}: {case.object}, {case.probe} probe, step {case.step} px, "
        f"{case.initial_probe} initial probe, {len(scan)} patterns",
        truth,
        {name: s["aligned"] for name, s in scores.items()},
        region,
    )
    row["scores"] = {k: {n: v for n, v in s.items() if n != "aligned"} for k, s in scores.items()}
    (folder / "scores.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def cached_ptychi(
    folder: Path,
    scan,
    *,
    key: dict,
    canvas: tuple[int, int],
    epochs: int,
    refine_probe: bool,
    args: argparse.Namespace,
) -> tuple[np.ndarray, float, bool]:
    """pty-chi's object for ``scan``, reused from ``folder/ptychi.npz`` when that was computed
    with the same settings (``key`` plus the solver's): (object, wall s, reused)."""
    settings = json.dumps(
        key
        | {
            "epochs": epochs,
            "batch": args.ptychi_batch,
            "refine_probe": refine_probe,
            "canvas": list(canvas),
            "accelerator": args.accelerator,
        },
        sort_keys=True,
    )
    path = folder / "ptychi.npz"
    if path.is_file() and not args.fresh_ptychi:
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["settings"]) == settings:
                return saved["object"], float(saved["wall_s"]), True
    ref = run_ptychi(scan, canvas=canvas, epochs=epochs, refine_probe=refine_probe, args=args)
    np.savez(path, object=ref.object, probe=ref.probe, wall_s=ref.wall_s, settings=settings)
    return ref.object, ref.wall_s, False


def run_siemens(args: argparse.Namespace) -> dict:
    """The real Siemens star: ours registered to pty-chi LSQML (probe refined) on the same frame."""
    from runner.data.npz import read_npz
    from runner.infer.stitch import covering_canvas

    folder = args.out / "siemens"
    folder.mkdir(parents=True, exist_ok=True)
    scan = read_npz(SIEMENS_DATA, measurement="counts")
    canvas = covering_canvas(scan.x_px, scan.y_px, scan.N)
    row: dict = {"patterns": len(scan)}
    ref, row["ptychi_wall_s"], row["ptychi_cached"] = cached_ptychi(
        folder,
        scan,
        key={"data": SIEMENS_DATA.name},
        canvas=canvas,
        epochs=SIEMENS_REFERENCE_EPOCHS,
        refine_probe=True,
        args=args,
    )
    objects_by_method = {}
    if not args.skip_pinn:
        pinn, final, row["pinn_wall_s"], row["pinn_timing"] = run_siemens_spec(folder, args)
        if final.shape != canvas:
            msg = f"the run's object is {final.shape}, the stitcher's frame {canvas}"
            raise RuntimeError(msg)
        objects_by_method = {"PINN": pinn, "PINN + refine": final}
    # The positions' bounding box alone: pty-chi's outermost pixels, lit by the probe's tails
    # only, hold outliers that would set the amplitude's SSIM range.
    region = scanned_region(scan.x_px, scan.y_px, canvas, 0)
    scores = {name: score(obj, ref, region) for name, obj in objects_by_method.items()}
    save_montage(
        folder / "montage.png",
        f"Siemens star (real data, {len(scan)} patterns): against pty-chi LSQML, "
        f"{SIEMENS_REFERENCE_EPOCHS} epochs, probe refined",
        ref,
        {name: s["aligned"] for name, s in scores.items()},
        region,
        reference_name="pty-chi",
    )
    row["scores"] = {k: {n: v for n, v in s.items() if n != "aligned"} for k, s in scores.items()}
    (folder / "scores.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def run_siemens_spec(folder: Path, args: argparse.Namespace):
    """``examples/siemens_star.toml`` with the suite's overrides: (PINN, PINN + refine, wall,
    timing)."""
    overrides = [f"execution.accelerator={args.accelerator}"]
    if args.star_epochs is not None:
        overrides.append(f"training.nepochs={args.star_epochs}")
    if args.refine == 0:
        overrides += ["refine.iterations=0", "refine.probe=false"]
    _, wall, timing = run_spec(
        SIEMENS_SPEC,
        folder / "run",
        overrides=overrides,
        log=folder / "run.log",
        threads=args.threads,
    )
    pinn, final = pinn_objects(folder / "run")
    return pinn, final, wall, timing


def siemens_table(row: dict) -> str:
    lines = [
        f"Siemens star ({row['patterns']} measured patterns): scored against pty-chi LSQML "
        f"({SIEMENS_REFERENCE_EPOCHS} epochs, probe refined, {row['ptychi_wall_s']:.0f} s)",
        "",
        "| method | amp SSIM | phase SSIM | phase FRC50 | shift (px) | wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    wall = walls(row)
    for method, s in row["scores"].items():
        lines.append(
            f"| {method} | {s['amp_ssim']:.3f} | {s['phase_ssim']:.3f} | {s['phase_frc50']:.1f} | "
            f"{s['shift_px'][0]:+.1f}, {s['shift_px'][1]:+.1f} | {wall[method]} |"
        )
    return "\n".join(lines)


def walls(row: dict) -> dict[str, str]:
    """Wall time per method: the run's own (``timing.toml``, interpreter start excluded) for
    the PINN, split at the refinement stage (``refine_time_s``)."""
    ptychi = f"{row['ptychi_wall_s']:.0f}" + (" (cached)" if row["ptychi_cached"] else "")
    if "pinn_timing" not in row:
        return {"pty-chi": ptychi}
    timing = row["pinn_timing"]
    total = float(timing["wall_time_s"])
    refine = timing.get("refine_time_s")
    calibrated = row.get("calibrated_timing")
    return {
        "PINN": f"{total if refine is None else total - refine:.0f}",
        "PINN + refine": f"{total:.0f} (refine {refine:.1f})"
        if refine is not None
        else "(same run)",
        "pty-chi": ptychi,
    } | (
        {}
        if calibrated is None
        else {
            CALIBRATED: f"{float(calibrated['wall_time_s']):.0f} "
            f"(calibration {float(calibrated['calibrate_time_s']):.1f})"
        }
    )


def table(rows: Sequence[dict]) -> str:
    lines = [
        "| case | object | probe | step | initial probe | patterns | method | amp SSIM | "
        "phase SSIM | phase MAE (rad) | phase FRC50 | shift (px) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, wall = r["case"], walls(r)
        for method, s in r["scores"].items():
            lines.append(
                f"| {c['name']} | {c['object']} | {c['probe']} | {c['step']} | "
                f"{c['initial_probe']} | {r['patterns']} | {method} | {s['amp_ssim']:.3f} | "
                f"{s['phase_ssim']:.3f} | {s['phase_mae']:.3f} | {s['phase_frc50']:.1f} | "
                f"{s['shift_px'][0]:+.1f}, {s['shift_px'][1]:+.1f} | {wall[method]} |"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [c.name for c in CASES]
    parser.add_argument(
        "--cases", nargs="+", choices=[*names, "siemens"], default=[*names, "siemens"]
    )
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    parser.add_argument(
        "--epochs",
        type=int,
        default=8,
        help="PINN epochs for the anchor's pattern count; a case with fewer patterns trains "
        "proportionally more epochs, so every PINN takes the same number of steps",
    )
    parser.add_argument("--refine", type=int, default=100, help="refine.iterations (0: PINN only)")
    parser.add_argument("--ptychi-epochs", type=int, default=100)
    parser.add_argument(
        "--star-epochs",
        type=int,
        default=None,
        help="PINN epochs on the Siemens star (default: the spec's)",
    )
    parser.add_argument("--ptychi-batch", type=int, default=32)
    parser.add_argument(
        "--fresh-ptychi",
        action="store_true",
        help="recompute pty-chi even where OUT/CASE/ptychi.npz holds a result with the same settings",
    )
    parser.add_argument(
        "--skip-pinn", action="store_true", help="run pty-chi only (the star: its reference only)"
    )
    parser.add_argument("--nphotons", type=float, default=1e6, help="photons per pattern")
    parser.add_argument("--accelerator", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch_threads(),
        help="CPU threads for both the PINN run and pty-chi (on a shared machine 1 is often "
        "faster: oversubscribed threads wait on each other)",
    )
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "ptycho-quality")
    args = parser.parse_args(argv)
    args.anchor_patterns = len(range(0, OBJECT_SIZE - N + 1, 6)) ** 2
    return args


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.list:
        for c in CASES:
            print(
                f"{c.name}: {c.object}, {c.probe} probe, step {c.step} px, {c.initial_probe} initial probe"
            )
        print("siemens: the real Siemens star, against pty-chi LSQML (60 epochs, probe refined)")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = [run_case(c, args) for c in CASES if c.name in args.cases]
    report = [
        f"host: {host()}",
        f"N = {N}, {OBJECT_SIZE} px objects, {args.nphotons:.0e} photons per pattern; PINN "
        f"{args.epochs} epochs (anchor), gridsize {PINN_TRAINING['gridsize']}, batch "
        f"{PINN_TRAINING['batch_size']}, lr {PINN_TRAINING['learning_rate']:g}; refine "
        f"{args.refine} iterations; "
        f"pty-chi LSQML {args.ptychi_epochs} epochs, batch {args.ptychi_batch}",
        "",
        table(rows),
    ]
    if "siemens" in args.cases:
        report += ["", siemens_table(run_siemens(args))]
    report.append(f"\nsuite wall time: {time.perf_counter() - started:.0f} s")
    text = "\n".join(report) + "\n"
    (args.out / "quality.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
