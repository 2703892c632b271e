"""A study's results as tables and pictures: ``summary.csv``, ``summary.md``, ``summary.png``.

One row per point: its id, the varied keys' values, its status, the run's wall time and every
number in its ``metrics.json`` flattened (``reconstruction.amplitude.ssim`` →
``amplitude_ssim``; the last epoch of the training history as ``train_loss``, ``val_loss``,
``lr``; curves such as the FRC left out). The picture plots the headline metrics against each
varied key and shows every complete point's reconstructed amplitude. The rows are built from
values read by the caller; the files are written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from attrs import field, frozen

from ptycho_spec import atomic
from ptycho_spec.study.compile import render_value
from ptycho_spec.study.spec import SEED_KEY

HEADLINE: Final = ("amplitude_ssim", "phase_ssim", "amplitude_frc50", "phase_frc50")
# the stitched reconstruction is the result; other tables keep their own prefix
_UNPREFIXED: Final = ("reconstruction",)
_THUMBNAIL_PX: Final = 96


@frozen(kw_only=True)
class Row:
    """One point's line of the summary."""

    id: str
    overrides: Mapping[str, Any]
    status: str
    wall_time_s: float | None = None
    metrics: Mapping[str, float] = field(factory=dict)


def flat_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Every number of a ``metrics.json``, by flattened name (see the module docstring)."""
    flat: dict[str, float] = {}
    history = report.get("history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        flat |= {k: v for k, v in history[-1].items() if k != "epoch" and _is_number(v)}
    _flatten(report, (), flat)
    return flat


def _flatten(node: Mapping[str, Any], prefix: tuple[str, ...], out: dict[str, float]) -> None:
    for key, value in node.items():
        path = prefix if not prefix and key in _UNPREFIXED else (*prefix, key)
        if isinstance(value, Mapping):
            _flatten(value, path, out)
        elif _is_number(value):
            out["_".join(path)] = float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def columns(rows: Sequence[Row], varied: Sequence[str]) -> list[str]:
    """``id``, the varied keys, ``status``, ``wall_time_s``, then every metric (first seen
    first, headline metrics leading)."""
    names: dict[str, None] = {}
    for row in rows:
        names |= dict.fromkeys(row.metrics)
    metrics = [m for m in HEADLINE if m in names] + [m for m in names if m not in HEADLINE]
    return ["id", *varied, "status", "wall_time_s", *metrics]


def _cells(row: Row, header: Sequence[str], number: Any) -> list[str]:
    values: dict[str, Any] = {"id": row.id, "status": row.status, "wall_time_s": row.wall_time_s}
    values |= {k: v if isinstance(v, str) else render_value(v) for k, v in row.overrides.items()}
    values |= row.metrics
    return [
        number(v) if _is_number(v) else ("" if v is None else str(v))
        for v in (values.get(name) for name in header)
    ]


def csv_text(rows: Sequence[Row], varied: Sequence[str]) -> str:
    """The summary as CSV (full precision)."""
    header = columns(rows, varied)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(_cells(row, header, repr) for row in rows)
    return out.getvalue()


def markdown_text(rows: Sequence[Row], varied: Sequence[str], *, title: str) -> str:
    """The summary as a Markdown table (four significant digits)."""
    header = columns(rows, varied)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(row, header, _short)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _short(value: float) -> str:
    return f"{value:.4g}"


# --- the picture ------------------------------------------------------------------------------


def figure_png(
    rows: Sequence[Row], varied: Sequence[str], images: Mapping[str, np.ndarray], *, title: str
) -> bytes:
    """Headline metrics against each varied key (one series per combination of the other
    keys, repeats averaged), above the reconstructed amplitude of each point in ``images``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in varied if k != SEED_KEY]
    metrics = [m for m in HEADLINE if any(m in r.metrics for r in rows)]
    plots = len(metrics) * bool(keys)
    thumbs = [r for r in rows if r.id in images]
    ncols = max(len(keys), 1, min(len(thumbs), 6))
    nrows_thumbs = math.ceil(len(thumbs) / ncols)
    height = 2.6 * (len(metrics) if plots else 0) + 2.2 * nrows_thumbs + 0.6
    fig = Figure(figsize=(3.2 * ncols, max(height, 2.5)), layout="constrained")
    fig.suptitle(title)
    heights = [2.6 * len(metrics)] * bool(plots) + [2.2 * nrows_thumbs] * bool(thumbs)
    parts = fig.subfigures(len(heights), 1, height_ratios=heights) if len(heights) > 1 else [fig]
    if plots:
        axes = parts[0].subplots(len(metrics), len(keys), squeeze=False)
        for i, metric in enumerate(metrics):
            for j, key in enumerate(keys):
                _metric_plot(axes[i][j], rows, keys, key, metric)
    if thumbs:
        grid = parts[-1].subplots(nrows_thumbs, ncols, squeeze=False)
        for ax in grid.flat:
            ax.set_axis_off()
        for ax, row in zip(grid.flat, thumbs, strict=False):
            ax.imshow(_thumbnail(images[row.id]), cmap="gray")
            label = ", ".join(
                f"{k.split('.')[-1]}={render_value(v)}" for k, v in row.overrides.items()
            )
            ax.set_title(f"{row.id} {label}".strip(), fontsize=7)
    if not plots and not thumbs:
        fig.text(0.5, 0.5, "no complete point yet", ha="center")
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def _metric_plot(ax: Any, rows: Sequence[Row], keys: Sequence[str], key: str, metric: str) -> None:
    """``metric`` against ``key``: one line per combination of the other keys' values."""
    values = {render_value(r.overrides[key]): r.overrides[key] for r in rows if key in r.overrides}
    numeric = all(_is_number(v) for v in values.values())
    order = sorted(values, key=lambda t: values[t]) if numeric else sorted(values)
    position = {t: (values[t] if numeric else i) for i, t in enumerate(order)}
    others = [k for k in keys if k != key]
    series: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if metric in row.metrics and key in row.overrides:
            name = ", ".join(f"{k}={render_value(row.overrides.get(k))}" for k in others)
            at = series.setdefault(name, {}).setdefault(render_value(row.overrides[key]), [])
            at.append(row.metrics[metric])
    for name, points in series.items():
        xs = [t for t in order if t in points]
        means = [float(np.mean(points[t])) for t in xs]
        ax.plot([position[t] for t in xs], means, "o-", label=name or None)
    if numeric and min(values.values()) > 0 and max(values.values()) >= 10 * min(values.values()):
        ax.set_xscale("log")  # sizes and photon counts are swept geometrically
    ax.set_xticks([position[t] for t in order], order)
    ax.minorticks_off()
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    if len(series) > 1:
        ax.legend(fontsize=7)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(max(image.shape) / _THUMBNAIL_PX))
    return image[::step, ::step]


def write_summary(
    out_dir: Path,
    rows: Sequence[Row],
    varied: Sequence[str],
    images: Mapping[str, np.ndarray],
    *,
    title: str,
) -> list[Path]:
    """Write the three summary files; returns their paths."""
    paths = [out_dir / name for name in ("summary.csv", "summary.md", "summary.png")]
    atomic.write_text(paths[0], csv_text(rows, varied))
    atomic.write_text(paths[1], markdown_text(rows, varied, title=title))
    atomic.write_bytes(paths[2], figure_png(rows, varied, images, title=title))
    return paths
