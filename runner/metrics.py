"""Reconstruction metrics with the reference's alignment (``ptycho/evaluation.py``).

Scoring region: the bounding box of the pixels the scan covered (``weight > 0``), minus
``border`` px on each side (the reference trims offset/2 = 2 px). Amplitude: the prediction is
rescaled so its mean equals the truth's. Phase: the relative offset and linear ramp between the
two complex images is removed first (``match_phase``), then a least-squares plane a·x + b·y + c
is fitted and removed from each image separately (the reference's "plane" alignment). The first
step departs from the reference: a plane fitted to a *wrapped* phase is wrong once the phase
wraps, so a reconstruction off by a constant phase near π, or by a ramp that wraps across the
field, scored as garbage although it differs only by the ambiguity the plane fit is meant to
remove.

* MAE, MSE: over covered pixels of the region.
* PSNR = 10·log10(peak² / MSE) with peak = the truth's amplitude range (max − min) for
  amplitude and 2π for phase. (The reference's ``cv2.PSNR`` assumes a peak of 255 on unit-range
  data, which adds 48.1 dB; these values are not comparable with its numbers.)
* SSIM: amplitude with data_range = the truth's range; phase mapped (φ + π)/2π with
  data_range 1, as the reference. The window is skimage's default (7 × 7 uniform, sample
  covariance), which the reference calls; ``ssim(..., gaussian=True)`` is the σ = 1.5 variant.
* FRC: ring correlation Re ΣF₁F₂* / sqrt(Σ|F₁|²·Σ|F₂|²) on integer-radius rings of the centred
  square crop; ``frc50`` is the first crossing of 0.5 in ring units, linearly interpolated
  (the number of rings when the curve never drops below 0.5).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from attrs import asdict, frozen

from runner.physics.kernels import gaussian_kernel, scipy_radius

SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004, skimage's defaults
UNIFORM_WINDOW = 7
GAUSSIAN_SIGMA, GAUSSIAN_TRUNCATE = 1.5, 3.5  # skimage's gaussian_weights=True window


@frozen(kw_only=True)
class ChannelMetrics:
    """Scores of one channel (amplitude or phase); ``frc`` is the ring curve ``(R,)``."""

    mae: float
    mse: float
    psnr: float
    ssim: float
    frc50: float
    frc: np.ndarray


@frozen(kw_only=True)
class Metrics:
    """Amplitude and phase scores of a reconstruction against its ground truth."""

    amplitude: ChannelMetrics
    phase: ChannelMetrics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats, and the FRC curves as lists."""
        return {
            name: asdict(
                getattr(self, name),
                value_serializer=lambda _i, _a, v: v.tolist() if isinstance(v, np.ndarray) else v,
            )
            for name in ("amplitude", "phase")
        }


def _window(gaussian: bool) -> np.ndarray:
    """skimage's 1-D SSIM weights: uniform over 7 samples, or its truncated Gaussian."""
    if not gaussian:
        return np.full(UNIFORM_WINDOW, 1 / UNIFORM_WINDOW)
    return gaussian_kernel(GAUSSIAN_SIGMA, scipy_radius(GAUSSIAN_SIGMA, GAUSSIAN_TRUNCATE))


def _valid_filter(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable correlation keeping only fully inside windows: ``(H, W)`` → ``(H−w+1, W−w+1)``."""
    w = len(k)
    rows = sum(k[t] * img[t : img.shape[0] - w + 1 + t] for t in range(w))
    return sum(k[t] * rows[:, t : img.shape[1] - w + 1 + t] for t in range(w))


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float, gaussian: bool = False) -> float:
    """Mean structural similarity of two ``(H, W)`` real images.

    Equals ``skimage.metrics.structural_similarity(a, b, data_range=...)`` (uniform window,
    sample covariance), or with ``gaussian=True`` its ``gaussian_weights=True,
    use_sample_covariance=False`` form: both average the SSIM map over the windows that lie
    entirely inside the image, which is what skimage's final crop keeps.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    k = _window(gaussian)
    np_ = len(k) ** 2
    cov_norm = 1.0 if gaussian else np_ / (np_ - 1)
    mu_a, mu_b = _valid_filter(a, k), _valid_filter(b, k)
    var_a = cov_norm * (_valid_filter(a * a, k) - mu_a**2)
    var_b = cov_norm * (_valid_filter(b * b, k) - mu_b**2)
    cov = cov_norm * (_valid_filter(a * b, k) - mu_a * mu_b)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(s.mean())


def frc(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Fourier ring correlation of two ``(H, W)`` real images → (curve ``(R,)``, 0.5 crossing).

    The images are centre-cropped to a square of side n; rings are integer radii 0 … n/2 − 1
    about the zero frequency.
    """
    n = min(a.shape)
    crop = [tuple(slice((s - n) // 2, (s - n) // 2 + n) for s in img.shape) for img in (a, b)]
    fa = np.fft.fftshift(np.fft.fft2(np.asarray(a, np.float64)[crop[0]]))
    fb = np.fft.fftshift(np.fft.fft2(np.asarray(b, np.float64)[crop[1]]))
    t = np.arange(n) - n // 2
    ring = np.rint(np.hypot(t[:, None], t[None, :])).astype(np.int64).ravel()
    keep = ring < n // 2

    def ring_sum(v: np.ndarray) -> np.ndarray:
        return np.bincount(ring[keep], v.ravel()[keep], minlength=n // 2)

    num = ring_sum((fa * fb.conj()).real)
    den = np.sqrt(ring_sum(np.abs(fa) ** 2) * ring_sum(np.abs(fb) ** 2))
    curve = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return curve, _crossing(curve, 0.5)


def _crossing(curve: np.ndarray, level: float) -> float:
    """The first ring radius, interpolated, where ``curve`` falls below ``level``; ring 0 (the
    zero frequency: only the mean, which scoring removes or rescales) is not looked at, and a
    curve already below ``level`` at ring 1 resolves nothing (0)."""
    below = np.nonzero(curve[1:] < level)[0] + 1
    if len(below) == 0:
        return float(len(curve))
    r = int(below[0])
    if r == 1:
        return 0.0
    return float(r - 1 + (curve[r - 1] - level) / (curve[r - 1] - curve[r]))


def remove_plane(phase: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``phase (H, W)`` minus its least-squares plane a·x + b·y + c fitted on ``where``."""
    yy, xx = np.indices(phase.shape, dtype=np.float64)
    design = np.stack([xx[where], yy[where], np.ones(int(where.sum()))], axis=1)
    coef, *_ = np.linalg.lstsq(design, phase[where].astype(np.float64), rcond=None)
    return phase - (coef[0] * xx + coef[1] * yy + coef[2])


def match_phase(pred: np.ndarray, truth: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``pred (H, W)`` complex times e^{−i(kx·x + ky·y + c)}: the relative ramp (kx, ky) rad/px
    and offset c rad to ``truth`` removed, estimated on ``where`` without unwrapping.

    With z = pred·conj(truth), the ramp is the phase of Σ z(x+1)·conj(z(x)) over horizontally
    adjacent pixels both in ``where`` (likewise vertically) and c the phase of Σ z·e^{−i(kx·x +
    ky·y)}: sums of complex products, which no wrap disturbs while the relative phase changes by
    less than π per pixel.
    """
    z = np.where(where, pred * np.conj(truth), 0).astype(np.complex128)
    kx = np.angle(np.sum(z[:, 1:] * np.conj(z[:, :-1])))
    ky = np.angle(np.sum(z[1:, :] * np.conj(z[:-1, :])))
    yy, xx = np.indices(z.shape, dtype=np.float64)
    ramp = np.exp(-1j * (kx * xx + ky * yy))
    offset = np.angle(np.sum(z * ramp))
    return pred * ramp * np.exp(-1j * offset)


def _region(shape: tuple[int, int], weight: np.ndarray | None, border: int) -> tuple[slice, slice]:
    """Bounding box of the covered pixels, ``border`` px trimmed from each side."""
    covered = np.ones(shape, bool) if weight is None else np.asarray(weight) > 0
    if not covered.any():
        msg = "no pixel of the reconstruction is covered by the scan"
        raise ValueError(msg)
    rows, cols = np.nonzero(covered.any(axis=1))[0], np.nonzero(covered.any(axis=0))[0]
    box = (
        slice(rows[0] + border, rows[-1] + 1 - border),
        slice(cols[0] + border, cols[-1] + 1 - border),
    )
    if box[0].start >= box[0].stop or box[1].start >= box[1].stop:
        msg = f"the covered region is too small to trim a {border} px border"
        raise ValueError(msg)
    return box


def _channel(
    truth: np.ndarray,
    pred: np.ndarray,
    where: np.ndarray,
    *,
    peak: float,
    ssim_range: float,
    ssim_offset: float = 0.0,
) -> ChannelMetrics:
    err = (truth - pred)[where]
    mse = float(np.mean(err**2))
    curve, crossing = frc(truth, pred)
    return ChannelMetrics(
        mae=float(np.mean(np.abs(err))),
        mse=mse,
        psnr=float(10 * math.log10(peak**2 / mse)) if mse > 0 else math.inf,
        ssim=ssim(
            (truth + ssim_offset) / ssim_range, (pred + ssim_offset) / ssim_range, data_range=1.0
        ),
        frc50=crossing,
        frc=curve,
    )


def evaluate(
    pred: np.ndarray, truth: np.ndarray, *, border: int = 2, weight: np.ndarray | None = None
) -> Metrics:
    """Score ``pred`` against ``truth``, both ``(H, W)`` complex on the same pixel grid.

    ``weight`` ``(H, W)`` (the stitcher's) marks covered pixels (> 0); None scores everything.
    """
    box = _region(truth.shape, weight, border)
    p, t = np.asarray(pred)[box], np.asarray(truth)[box]
    where = np.ones(t.shape, bool) if weight is None else np.asarray(weight)[box] > 0
    amp_t = np.abs(t).astype(np.float64)
    amp_p = np.abs(p).astype(np.float64)
    amp_p = (
        amp_p * (amp_t[where].mean() / amp_p[where].mean()) if amp_p[where].mean() > 0 else amp_p
    )
    amp_range = float(amp_t[where].max() - amp_t[where].min()) or 1.0  # a flat truth: unit range
    phi_t = remove_plane(np.angle(t), where)
    phi_p = remove_plane(np.angle(match_phase(p, t, where)), where)
    return Metrics(
        amplitude=_channel(amp_t, amp_p, where, peak=amp_range, ssim_range=amp_range),
        phase=_channel(
            phi_t, phi_p, where, peak=2 * math.pi, ssim_range=2 * math.pi, ssim_offset=math.pi
        ),
    )
