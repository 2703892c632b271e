"""What well-formed data must also mean before a run does any work: an illuminating probe,
measured patterns, and positions a stitching canvas can hold.

The compiler calls these on the data headers' arrays (``facts.py``, ``formats/ptychodus.py``) and
the runner on what it loads (``runner/data/npz.py``, ``runner/run/prepare.py``), so data that
changed after compilation are refused as early. Each failure is a ``DataError`` (exit 4)
naming the file and the key. numpy only.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from ptycho_spec.errors import DataError

# The stitching canvas (``runner/infer/stitch.py``) takes, per pixel, the complex64
# object (8 B) and float64 weight (8 B) it returns plus its float64 running sums: real,
# imaginary and weight, once in total and once per bilinear splat (48 B).
CANVAS_BYTES_PER_PIXEL: Final = 64
CANVAS_BUDGET_BYTES: Final = 4 * 2**30
_GIB: Final = 2**30
# The runner holds probes as complex64 and divides by their mean amplitude: below float32's
# smallest normal number that mean is zero or has lost its precision.
FLOAT32_TINY: Final = float(np.finfo(np.float32).tiny)


def check_probe(probe: Any, *, path: str, key: str = "probeGuess", within: str = "") -> None:
    """A probe ``(N, N)`` complex that illuminates: finite, not all zero, and with a mean
    amplitude that float32 resolves. ``within`` names a support the amplitudes were restricted
    to (the probe mask), for the message."""
    amplitude = np.abs(np.asarray(probe).astype(np.complex128))
    if not np.isfinite(amplitude).all():
        msg = "holds non-finite values (NaN or inf)"
        raise DataError(msg, path=path, key=key)
    if not amplitude.any():
        msg = f"is zero everywhere{within}: the probe illuminates nothing"
        raise DataError(msg, path=path, key=key)
    mean = float(amplitude.mean())
    if mean < FLOAT32_TINY:
        msg = (
            f"its mean amplitude{within}, {mean:.3g}, is below float32 resolution "
            f"({FLOAT32_TINY:.3g}); the runner normalizes the probe by it, so rescale the probe"
        )
        raise DataError(msg, path=path, key=key)


def central_share(probe: Any, side: int) -> float:
    """Fraction of an illuminating probe's intensity Σ|P|² on its central N/2 × N/2 box (rows
    and columns N/4 … 3N/4 − 1 of the ``side`` × ``side`` probe, which may carry a unit axis):
    the region ``model.pad_object`` lets the object fill."""
    intensity = np.abs(np.asarray(probe).astype(np.complex128).reshape(side, side)) ** 2
    q = side // 4
    return float(intensity[q : side - q, q : side - q].sum() / intensity.sum())


def check_patterns(amplitude: Any, *, path: str, key: str, over: str = "") -> None:
    """Patterns ``(M, N, N)`` that measured something: not zero everywhere (``over`` names
    the pixels they were restricted to, for the message)."""
    if not np.asarray(amplitude).any():
        msg = f"every pattern is zero{over}: nothing was measured"
        raise DataError(msg, path=path, key=key)


def check_spread(amplitude: Any, *, path: str, key: str, over: str = "") -> None:
    """Training patterns ``(M, N, N)`` that differ from one another: ``model.center_input``
    scales the generator's input by their spread about the mean pattern."""
    patterns = np.asarray(amplitude)
    rest = np.array_split(patterns[1:], max(1, len(patterns) // 1024))
    if not any((chunk != patterns[0]).any() for chunk in rest):
        msg = (
            f"its {len(patterns)} training pattern(s) are all the same{over}, so they have no "
            "spread to scale the generator's input by; set model.center_input = false"
        )
        raise DataError(msg, path=path, key=key)


def canvas_shape(x_px: Any, y_px: Any, n: int) -> tuple[int, int]:
    """(H, W) px of a canvas from object pixel (0, 0) that holds every N × N patch at the
    positions ``x_px, y_px (M,)`` (and pixel (0, 0) itself, where the stitcher starts)."""
    return _extent(np.asarray(y_px, np.float64), n), _extent(np.asarray(x_px, np.float64), n)


def _extent(values: np.ndarray, n: int) -> int:
    return math.ceil(max(float(values.max()), 0.0) - min(float(values.min()), 0.0)) + n + 1


def check_positions(x_px: Any, y_px: Any, *, n: int, path: str) -> None:
    """Finite scan positions ``x_px, y_px (M,)`` in object pixels whose stitching canvas fits
    ``CANVAS_BUDGET_BYTES``; the message says the span, the canvas and the likely mistake."""
    x, y = np.asarray(x_px, np.float64), np.asarray(y_px, np.float64)
    for key, values in (("xcoords", x), ("ycoords", y)):
        if not values.size:
            msg = "holds no positions: a scan needs at least one pattern"
            raise DataError(msg, path=path, key=key)
        if not np.isfinite(values).all():
            index = int(np.flatnonzero(~np.isfinite(values))[0])
            msg = f"holds non-finite positions (the first at index {index})"
            raise DataError(msg, path=path, key=key)
        # patch pixel j of a pattern at x lies on object pixel x − n/2 + j (bilinear): at
        # x ≤ −n/2 not one pixel reaches the object frame, which every stitch starts at 0
        outside = np.flatnonzero(values <= -n / 2)
        if outside.size:
            i = int(outside[0])
            msg = (
                f"{outside.size} of {values.size} positions, the first index {i} at "
                f"({x[i]:.4g}, {y[i]:.4g}) px, put their whole {n} px patch before object "
                "pixel 0, outside the object frame: positions must be object pixels; add "
                "their offset"
            )
            raise DataError(msg, path=path, key=key)
    h, w = canvas_shape(x, y, n)
    if h * w * CANVAS_BYTES_PER_PIXEL <= CANVAS_BUDGET_BYTES:
        return
    msg = (
        f"positions span x {x.min():.4g} to {x.max():.4g} and y {y.min():.4g} to {y.max():.4g} "
        f"px: a canvas from pixel (0, 0) holding every {n} px patch is {h} × {w} px, "
        f"{h * w * CANVAS_BYTES_PER_PIXEL / _GIB:.3g} GiB to stitch, beyond the "
        f"{CANVAS_BUDGET_BYTES / _GIB:.3g} GiB budget; {_likely_mistake(x, y, n)}"
    )
    raise DataError(msg, path=path, key="xcoords" if w >= h else "ycoords")


def _fits(x: np.ndarray, y: np.ndarray, n: int) -> bool:
    h, w = canvas_shape(x, y, n)
    return h * w * CANVAS_BYTES_PER_PIXEL <= CANVAS_BUDGET_BYTES


def _likely_mistake(x: np.ndarray, y: np.ndarray, n: int) -> str:
    """One outlier, a unit other than pixels, or an offset origin: what makes the canvas big."""
    if len(x) > 2:
        distance = np.hypot(x - np.median(x), y - np.median(y))
        far = int(np.argmax(distance))
        rest = np.arange(len(x)) != far
        if _fits(x[rest], y[rest], n):
            return (
                f"index {far} at ({x[far]:.4g}, {y[far]:.4g}) lies {distance[far]:.3g} px from "
                "the median position, far from the rest: an outlier?"
            )
    if len(x) > 1:
        step = float(np.median(np.hypot(np.diff(x), np.diff(y))))
        if step > n:
            return (
                f"the median step between consecutive positions is {step:.3g} px, more than "
                f"the {n} px patch, so no two patterns would overlap: positions in another "
                "unit (nm?) rather than object pixels?"
            )
    if _fits(x - x.min(), y - y.min(), n):
        return (
            f"the positions start at ({x.min():.4g}, {y.min():.4g}) px, far from pixel (0, 0) "
            "where the canvas starts: subtract their offset"
        )
    return "positions must be object pixels"
