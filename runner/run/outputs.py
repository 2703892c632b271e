"""Files a run writes besides the lock and the bundle: arrays, pictures, metrics.

Everything is written atomically. Pictures use matplotlib's object API with the Agg canvas,
so no global pyplot state and no display is needed.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ptycho_spec import atomic
from runner.metrics import match_phase, remove_plane


def save_reconstruction(
    path: Path,
    *,
    obj: np.ndarray,
    weight: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    truth: np.ndarray | None,
    pinn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    probe: np.ndarray | None = None,
) -> None:
    """``reconstruction.npz``: complex object, amplitude, phase, coverage, positions, truth.

    With a refinement stage, ``pinn`` = the PINN's own (object, weight, x_px, y_px) is kept
    under ``pinn_*`` keys, and ``probe`` (the refined probe ``(N, N)``) under ``probe``.
    """
    arrays: dict[str, np.ndarray] = {
        "object": obj.astype(np.complex64),
        "amplitude": np.abs(obj).astype(np.float32),
        "phase": np.angle(obj).astype(np.float32),
        "weight": weight.astype(np.float32),
        "x_px": x_px.astype(np.float64),
        "y_px": y_px.astype(np.float64),
    }
    if truth is not None:
        arrays["ground_truth"] = truth.astype(np.complex64)
    if pinn is not None:
        for key, value in zip(("object", "weight", "x_px", "y_px"), pinn, strict=True):
            arrays[f"pinn_{key}"] = value.astype(arrays[key].dtype)
    if probe is not None:
        arrays["probe"] = probe.astype(np.complex64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic.write_bytes(path, buf.getvalue())


def save_json(path: Path, payload: Mapping[str, Any]) -> None:
    atomic.write_text(path, json.dumps(_finite(payload), indent=2, sort_keys=True) + "\n")


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity; write them as null so any reader accepts the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _save_figure(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    atomic.write_bytes(path, buf.getvalue())


def display_images(
    obj: np.ndarray, weight: np.ndarray, truth: np.ndarray | None
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Amplitude and phase for people: ``{"amplitude": (ours, truth), "phase": (ours, truth)}``.

    Ptychography cannot measure a global phase (nor, with a trainable gain, the amplitude
    scale), so the pictures show the reconstruction aligned as the metrics score it: amplitude
    rescaled to the truth's mean, the phase offset and ramp that best match the truth removed
    (``match_phase``), then a fitted phase plane removed from both. Without a truth only the
    mean phase is removed. ``reconstruction.npz`` keeps the unaligned object.
    """
    covered = weight > 0
    if truth is None:
        turn = np.exp(-1j * np.angle(obj[covered].sum()))
        return {"amplitude": (np.abs(obj), None), "phase": (np.angle(obj * turn), None)}
    amp = np.abs(obj) * (np.abs(truth)[covered].mean() / max(np.abs(obj)[covered].mean(), 1e-30))
    phase = remove_plane(np.angle(match_phase(obj, truth, covered)), covered)
    return {
        "amplitude": (amp, np.abs(truth)),
        "phase": (phase, remove_plane(np.angle(truth), covered)),
    }


def save_images(
    path: Path,
    *,
    title: str,
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    aligned: bool,
    cmap: str,
) -> None:
    """Images side by side on one colour scale (the last panel's: the ground truth when there
    is one), each ``(label, image, weight)`` with its uncovered pixels (weight ≤ 0) blank."""
    shown = [
        (
            label + (", aligned" if aligned and label != "ground truth" else ""),
            np.ma.masked_where(weight <= 0, image),
        )
        for label, image, weight in panels
    ]
    scale = shown[-1][1]
    limits = {"vmin": float(scale.min()), "vmax": float(scale.max())} if scale.count() else {}
    fig = Figure(figsize=(4.6 * len(shown), 4.4))
    for k, (label, data) in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), k + 1)
        image = ax.imshow(data, cmap=cmap, interpolation="nearest", **limits)
        ax.set_title(f"{title}: {label}")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    _save_figure(fig, path)


def save_nll_plot(path: Path, nll: Sequence[float]) -> None:
    """``refine.png``: the Poisson NLL per photon of each refinement pass (its batches, each
    evaluated before its update; pass 0 starts from the PINN's object) and, last, of the final
    state."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(range(len(nll)), nll, marker="o", markersize=3)
    if min(nll) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("pass (the last point: the final state)")
    ax.set_ylabel("Poisson NLL per photon")
    ax.set_title("physics refinement")
    fig.tight_layout()
    _save_figure(fig, path)


def save_loss_plot(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    """Training and validation loss per epoch (log scale when every value is positive)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        if points:
            epochs, values = zip(*points, strict=True)
            ax.plot(epochs, values, marker="o", label=label)
    values = [h[k] for h in history for k in ("train_loss", "val_loss") if k in h]
    if values and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("PtychoPINN training")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
