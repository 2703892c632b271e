"""``Scan``: one diffraction scan in the PtychoPINN data contract, as validated numpy arrays."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from attrs import field, frozen


def _check(dtype: type, ndim: int) -> Any:
    """Validator: a numpy array of ``dtype`` with ``ndim`` axes."""

    def validate(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != ndim:
            shown = (
                f"{value.dtype} {value.shape}"
                if isinstance(value, np.ndarray)
                else type(value).__name__
            )
            msg = f"{attribute.name} must be a {ndim}-D {np.dtype(dtype)} array (got {shown})"
            raise ValueError(msg)

    return validate


def _optional(dtype: type, ndim: int) -> Any:
    return attrs.validators.optional(_check(dtype, ndim))


@frozen(kw_only=True)
class Scan:
    """A diffraction scan.

    ``amplitude`` ``(M, N, N)`` float32: measured amplitude X (counts were square-rooted at load).
    ``x_px``, ``y_px`` ``(M,)`` float64: scan positions in object pixels, x = column, y = row;
    the object pixel under patch pixel (N/2, N/2) (``runner/physics/shift.py``).
    ``probe`` ``(N, N)`` complex64 as stored (not normalized).
    ``object`` ``(H, W)`` complex64 ground truth, or None.
    ``scan_index`` ``(M,)`` int64: which scan (or simulated object) each pattern belongs to.
    ``valid_mask`` ``(N, N)`` bool, False = bad detector pixel, or None (all valid).
    ``source``: where the scan came from, for messages.
    """

    amplitude: np.ndarray = field(validator=_check(np.float32, 3))
    x_px: np.ndarray = field(validator=_check(np.float64, 1))
    y_px: np.ndarray = field(validator=_check(np.float64, 1))
    probe: np.ndarray = field(validator=_check(np.complex64, 2))
    object: np.ndarray | None = field(default=None, validator=_optional(np.complex64, 2))
    scan_index: np.ndarray = field(validator=_check(np.int64, 1))
    valid_mask: np.ndarray | None = field(default=None, validator=_optional(np.bool_, 2))
    source: str = field(default="<memory>")

    @scan_index.default
    def _zeros(self) -> np.ndarray:
        return np.zeros(len(self.amplitude), dtype=np.int64)

    def __attrs_post_init__(self) -> None:
        m, n, n2 = self.amplitude.shape
        problems = []
        if n != n2:
            problems.append(f"amplitude patterns are {n}×{n2}, not square")
        if self.probe.shape != (n, n):
            problems.append(f"probe is {self.probe.shape}, patterns are {n}×{n2}")
        for name in ("x_px", "y_px", "scan_index"):
            if getattr(self, name).shape != (m,):
                problems.append(f"{name} has shape {getattr(self, name).shape}, expected ({m},)")
        if self.valid_mask is not None and self.valid_mask.shape != (n, n):
            problems.append(f"valid_mask is {self.valid_mask.shape}, patterns are {n}×{n2}")
        if problems:
            raise ValueError(f"{self.source}: " + "; ".join(problems))

    @property
    def N(self) -> int:
        return int(self.amplitude.shape[-1])

    def __len__(self) -> int:
        return int(self.amplitude.shape[0])

    def masked_amplitude(self, rows: np.ndarray | None = None) -> np.ndarray:
        """``(M, N, N)`` float32 amplitudes (of patterns ``rows`` only, when given) with bad
        pixels set to 0 (the network's input)."""
        amplitude = self.amplitude if rows is None else self.amplitude[rows]
        if self.valid_mask is None:
            return amplitude
        return np.where(self.valid_mask, amplitude, np.float32(0))
