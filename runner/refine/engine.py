"""Physics refinement: the whole object (and optionally the probe and the scan positions)
fitted to every measured pattern with the same forward model the simulator and the network use.

Forward model, per pattern j: ψ_j = extract(O, r_j) · P (``operators.extract``: bilinear
sub-pixel patch at position r_j), Ψ_j = F(ψ_j) (``runner.physics.propagate.far_field``), and the
measured amplitude X_j ≈ |Ψ_j|. The objective is the amplitude ("Gaussian") likelihood
Σ_j ‖|Ψ_j| − X_j‖², the variance-stabilised form of the Poisson likelihood that pty-chi's
LSQML uses by default (Godard et al. 2012, Opt. Express 20, 25914; Odstrčil et al. 2018,
Opt. Express 26, 3108). The Poisson negative log-likelihood of the counts is what is reported.

One iteration is a pass over every pattern in random minibatches. For a minibatch:

1. the far-field amplitude is replaced by the measured one (bad detector pixels keep the
   model's), giving the exit-wave correction χ_j = F⁻¹(X_j·Ψ_j/|Ψ_j|) − ψ_j, which is the
   negative gradient of the objective with respect to ψ_j;
2. object and probe take simultaneous, preconditioned steps (regularized PIE, Maiden, Johnson &
   Li 2017, Optica 4, 736, summed over the minibatch as in LSQML's mini-batch update):
   ΔO = Σ_j extractᵀ(P*·χ_j) / ((1 − α)·Σ_j extractᵀ(|P|²) + α·max), ΔP = Σ_j O_j*·χ_j /
   ((1 − α)·Σ_j |O_j|² + α·max), both scaled by ``step_scale``: full steps for the first
   half of the passes, then shrinking ones that average the minibatches' noise away;
3. each position moves by the least-squares step that the patch's spatial derivative explains,
   (δx_j, δy_j) minimizing ‖δx·∂_xO_j·P + δy·∂_yO_j·P − χ_j‖² (Guizar-Sicairos &
   Fienup 2008; pty-chi's gradient position correction), bounded per step, with the mean displacement removed after each
   iteration (a global shift of all positions is not observable).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from attrs import frozen
from torch import Tensor

from runner.physics.propagate import far_field, far_field_inverse
from runner.refine.operators import Windows, extract, extract_adjoint, extract_gradient, windows

ALPHA = 0.15
"""rPIE's α: the share of the brightest illumination added to every pixel's denominator, which
bounds the step where the probe is dark (Maiden et al. 2017 suggest 0.05–0.25). A trade-off
measured on the quality suite (``benchmarks/RESULTS.md``, "Refinement steps"): a larger α
leaves less noise where a sparse scan lights the object dimly (cells, disk probe, step 12:
amplitude SSIM 0.373, 0.381, 0.385 at α = 0.1, 0.15, 0.2) but removes the errors of a PINN
start more slowly (lines anchor phase MAE 0.040, 0.052 rad at α = 0.1, 0.2)."""
STEP_FLOOR = 0.05
"""The share of the full object and probe step that the last passes approach (``step_scale``)."""
PROBE_START = 1
"""First iteration (0-based) that updates the probe: the object first absorbs the gross misfit
of a PINN object with a scale-fitted probe, so the probe update does not chase it."""
POSITION_START = 2
"""First iteration that moves positions: their gradient is only informative once the object is."""
MAX_POSITION_STEP_PX = 0.5
"""Largest move of one position in one update: a bad early gradient cannot throw a pattern off."""
LIT_SHARE = 0.1
"""Object pixels lit by less than this share of the brightest summed illumination count as not
reconstructed: ignored when the object's phase ramp is measured, blank in pictures and scores."""
NLL_EPS = 1e-8
"""Added to λ inside log λ (photons): keeps the NLL finite where the model is exactly dark."""


@frozen(kw_only=True)
class Measurements:
    """What refinement fits: ``amplitude`` X ``(M, N, N)`` real (bad pixels any value),
    ``valid`` ``(N, N)`` bool or None (all valid), ``photons_per_unit`` q: expected photons
    λ = q·|Ψ|² and measured k = q·X²."""

    amplitude: Tensor
    valid: Tensor | None
    photons_per_unit: float


@frozen(kw_only=True)
class Refined:
    """The result: ``object`` ``(H, W)`` complex on the input canvas; ``probe`` ``(N, N)`` complex
    (scale fitted, refined when asked); ``x_px``, ``y_px`` ``(M,)`` float64; ``illumination``
    ``(H, W)`` real, Σ_j extractᵀ(|P|²); ``nll`` per iteration (photon-normalized Poisson NLL,
    each pass's batches evaluated before their update; the last entry a full evaluation of the
    final state); ``probe_scale`` the factor fitted to the starting probe."""

    object: Tensor
    probe: Tensor
    x_px: Tensor
    y_px: Tensor
    illumination: Tensor
    nll: tuple[float, ...]
    probe_scale: float


def far_field_correction(
    far: Tensor, intensity: Tensor, measured: Tensor, valid: Tensor | None
) -> Tensor:
    """ΔΨ = X·Ψ/|Ψ| − Ψ for far fields ``far (B, N, N)`` (``intensity`` = |Ψ|², computed once
    by the caller) and measured amplitudes X ``(B, N, N)``: the move onto the measured modulus.
    Pixels outside ``valid`` keep the model's far field (ΔΨ = 0); a dark model pixel takes the
    measured amplitude with phase 0."""
    amp = intensity.sqrt()
    lit = amp > 0
    ratio = measured.to(amp.dtype) / torch.where(lit, amp, 1)
    delta = torch.where(lit, far * (ratio - 1), measured.to(far.dtype))
    if valid is not None:
        delta = torch.where(valid, delta, 0)
    return delta


def amplitude_correction(psi: Tensor, measured: Tensor, valid: Tensor | None) -> Tensor:
    """χ = F⁻¹(X·Ψ/|Ψ|) − ψ for exit waves ``psi (B, N, N)``: the exit-wave correction, the
    negative gradient of ½‖|Ψ| − X‖² with respect to ψ* (the far field is unitary)."""
    far = far_field(psi)
    return far_field_inverse(far_field_correction(far, _intensity(far), measured, valid))


def _intensity(far: Tensor) -> Tensor:
    """|Ψ|² from the real and imaginary parts: several times faster than ``abs()`` on CPU."""
    return far.real.square() + far.imag.square()


def _preconditioned(numerator: Tensor, weight: Tensor) -> Tensor:
    """numerator / ((1 − α)·weight + α·max weight): rPIE's step, bounded where weight is small."""
    top = weight.max()
    if not top > 0:
        return torch.zeros_like(numerator)
    return numerator / ((1 - ALPHA) * weight + ALPHA * top)


def step_scale(iteration: int, iterations: int) -> float:
    """The factor on the object and probe steps of pass ``iteration`` (0-based) of
    ``iterations``: 1 for the first half, then a half cosine from 1 towards ``STEP_FLOOR``, which
    it would reach one pass after the last.

    Each minibatch's step fits that minibatch's patterns, so with constant steps the object
    ends wherever the last few minibatches pulled it and keeps a noise of their disagreement
    (the measurement noise, seen one minibatch at a time). Shrinking the steps averages over
    many minibatches, as decreasing steps do for any stochastic gradient method (Robbins &
    Monro 1951). Measured over 100 passes on the quality suite: the weak-amplitude "cells"
    object's amplitude SSIM rises from 0.34–0.43 (α 0.1–0.5, constant steps) to 0.54, and no
    case loses (``benchmarks/RESULTS.md``). The first half at full step keeps the convergence
    of the constant-step method."""
    half = iterations // 2
    if iteration < half:
        return 1.0
    progress = (iteration - half) / (iterations - half)
    return STEP_FLOOR + (1 - STEP_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))


def position_steps(patch_dx: Tensor, patch_dy: Tensor, probe: Tensor, chi: Tensor) -> Tensor:
    """Least-squares moves ``(2, B)`` [δx, δy] px that explain corrections ``chi (B, N, N)``
    with the exit-wave derivatives ∂O·P: per pattern the 2 × 2 normal equations of
    min ‖δx·∂_xO·P + δy·∂_yO·P − χ‖², each component bounded by ``MAX_POSITION_STEP_PX``."""
    gx, gy = patch_dx * probe, patch_dy * probe

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a.conj() * b).real.sum(dim=(-2, -1)).double()

    axx, axy, ayy = dot(gx, gx), dot(gx, gy), dot(gy, gy)
    bx, by = dot(gx, chi), dot(gy, chi)
    det = axx * ayy - axy**2
    # a flat patch (no gradient) or a degenerate pair of gradients explains no move
    ok = det > 1e-12 * (axx * ayy).clamp_min(torch.finfo(torch.float64).tiny)
    safe = torch.where(ok, det, 1.0)
    steps = torch.stack([(ayy * bx - axy * by) / safe, (axx * by - axy * bx) / safe])
    return torch.where(ok, steps, 0.0).clamp(-MAX_POSITION_STEP_PX, MAX_POSITION_STEP_PX)


class _Problem:
    """The fixed parts of one refinement: data, canvas geometry, batching."""

    def __init__(self, data: Measurements, n: int, canvas_shape: tuple[int, int]) -> None:
        self.data = data
        self.n = n
        self.pad = n // 2 + 2  # every window of a position inside the canvas fits the padding
        h, w = canvas_shape
        self.padded_shape = (h + 2 * self.pad, w + 2 * self.pad)
        q = data.photons_per_unit
        self.counts = _masked(q * data.amplitude.double() ** 2, data.valid)  # k (M, N, N)
        self.log_factorials = _masked(torch.lgamma(self.counts + 1), data.valid).sum(dim=(-2, -1))
        self.mean_photons = float(self.counts.sum()) / len(self.counts)

    def nll_sum(self, intensity: Tensor, idx: Tensor | slice) -> float:
        """Σ over patterns ``idx`` of the Poisson NLL λ − k·log(λ + ε) + log k!, λ = q·|Ψ|²,
        in float64 (at 10⁹ photons λ and k·log λ cancel to ~10⁻⁷ relative)."""
        lam = self.data.photons_per_unit * intensity.double()
        k = self.counts[idx]
        terms = _masked(lam - k * torch.log(lam + NLL_EPS), self.data.valid)
        return float(terms.sum() + self.log_factorials[idx].sum())

    def windows(self, x_px: Tensor, y_px: Tensor) -> Windows:
        h, w = self.padded_shape
        # a position may wander only as far as the padding lets its window stay on the canvas
        x = x_px.clamp(self.n / 2 - self.pad, w - self.pad - self.n / 2 - 1)
        y = y_px.clamp(self.n / 2 - self.pad, h - self.pad - self.n / 2 - 1)
        return windows(x, y, self.n, offset_px=self.pad)

    def batches(self, generator: torch.Generator, batch_size: int) -> list[Tensor]:
        m = len(self.data.amplitude)
        order = torch.randperm(m, generator=generator)
        return list(order.to(self.data.amplitude.device).split(batch_size))


def _masked(values: Tensor, valid: Tensor | None) -> Tensor:
    return values if valid is None else values * valid


def fit_probe_scale(
    canvas: Tensor, probe: Tensor, x_px: Tensor, y_px: Tensor, problem: _Problem, chunk: int
) -> float:
    """The factor c minimizing Σ‖c·|F(O_j·P)| − X_j‖² over every pattern: the PINN's object and
    the data's probe agree on shape, not on overall power."""
    cross = square = 0.0
    for start in range(0, len(x_px), chunk):
        sel = slice(start, start + chunk)
        win = problem.windows(x_px[sel], y_px[sel])
        amp = _intensity(far_field(extract(canvas, win) * probe)).double().sqrt()
        measured = problem.data.amplitude[sel].double()
        cross += float(_masked(amp * measured, problem.data.valid).sum())
        square += float(_masked(amp**2, problem.data.valid).sum())
    if not (square > 0 and cross > 0):
        return 1.0
    return cross / square


def _evaluate_nll(
    canvas: Tensor, probe: Tensor, x_px: Tensor, y_px: Tensor, problem: _Problem, chunk: int
) -> float:
    total = 0.0
    for start in range(0, len(x_px), chunk):
        sel = slice(start, start + chunk)
        win = problem.windows(x_px[sel], y_px[sel])
        total += problem.nll_sum(_intensity(far_field(extract(canvas, win) * probe)), sel)
    return total / (len(x_px) * problem.mean_photons)


def refine(
    obj: Tensor,
    probe: Tensor,
    x_px: Tensor,
    y_px: Tensor,
    data: Measurements,
    *,
    iterations: int,
    batch_size: int,
    update_probe: bool,
    update_positions: bool,
    seed: int,
    progress: bool = False,
    label: str = "refine",
) -> Refined:
    """Refine ``obj (H, W)`` complex (and ``probe (N, N)`` complex, positions ``(M,)`` px) against
    ``data``. All tensors on one device; the object's dtype sets the precision. Minibatch order
    comes from a CPU ``torch.Generator(seed)``, so a run is reproducible wherever it runs.
    ``label`` names the progress bar."""
    from tqdm.auto import tqdm

    n = probe.shape[-1]
    problem = _Problem(data, n, tuple(obj.shape))
    pad, (hp, wp) = problem.pad, problem.padded_shape
    canvas = obj.new_zeros(hp, wp)
    canvas[pad : hp - pad, pad : wp - pad] = obj
    x, y = x_px.double().clone(), y_px.double().clone()
    x0_mean, y0_mean = x.mean(), y.mean()
    chunk = max(batch_size, 64)
    scale = fit_probe_scale(canvas, probe, x, y, problem, chunk)
    probe = probe * scale
    if update_probe:
        canvas, probe = move_phase_ramp(canvas, probe, _illumination(probe, x, y, problem, chunk))
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    bar = tqdm(range(iterations), desc=label, unit="it", disable=not progress, leave=False)
    for it in bar:
        step = step_scale(it, iterations)
        nll_sum = 0.0
        for idx in problem.batches(generator, batch_size):
            win = problem.windows(x[idx], y[idx])
            patch = extract(canvas, win)
            far = far_field(patch * probe)
            intensity = _intensity(far)
            nll_sum += problem.nll_sum(intensity, idx)
            chi = far_field_inverse(
                far_field_correction(far, intensity, data.amplitude[idx], data.valid)
            )
            illum = extract_adjoint(_intensity(probe).expand(len(idx), n, n), win, (hp, wp))
            step_obj = step * _preconditioned(
                extract_adjoint(chi * probe.conj(), win, (hp, wp)), illum
            )
            if update_probe and it >= PROBE_START:
                weight = _intensity(patch).sum(dim=0)
                probe = probe + step * _preconditioned((chi * patch.conj()).sum(dim=0), weight)
            if update_positions and it >= POSITION_START:
                dx, dy = extract_gradient(canvas, win)
                move = position_steps(dx, dy, probe, chi)
                x[idx] += move[0]
                y[idx] += move[1]
            canvas = canvas + step_obj
        if update_positions and it >= POSITION_START:
            x += x0_mean - x.mean()
            y += y0_mean - y.mean()
        history.append(nll_sum / (len(x) * problem.mean_photons))
        bar.set_postfix(nll=f"{history[-1]:.5g}")
    history.append(_evaluate_nll(canvas, probe, x, y, problem, chunk))
    illumination = _illumination(probe, x, y, problem, chunk)
    if update_probe:
        canvas, probe = move_phase_ramp(canvas, probe, illumination)
    crop = (slice(pad, hp - pad), slice(pad, wp - pad))
    return Refined(
        object=canvas[crop],
        probe=probe,
        x_px=x,
        y_px=y,
        illumination=illumination[crop],
        nll=tuple(history),
        probe_scale=scale,
    )


def move_phase_ramp(canvas: Tensor, probe: Tensor, illumination: Tensor) -> tuple[Tensor, Tensor]:
    """(O·e^{−ik·r}, P·e^{ik·r}) with k the object's mean phase gradient (rad/px) over its
    well-lit pixels: exit waves only gain a constant phase per pattern, invisible in the far
    field, so the fit is unchanged. An object phase ramp and a probe counter-ramp are one
    ambiguity of ptychography with a free probe; this keeps the ramp in the probe (a shift of
    its far field), so the object's phase does not wrap across the picture."""
    lit = illumination >= LIT_SHARE * illumination.max()
    both_x, both_y = lit[:, 1:] & lit[:, :-1], lit[1:, :] & lit[:-1, :]
    kx = torch.angle(torch.where(both_x, canvas[:, 1:] * canvas[:, :-1].conj(), 0).sum())
    ky = torch.angle(torch.where(both_y, canvas[1:, :] * canvas[:-1, :].conj(), 0).sum())

    def ramp(shape: tuple[int, int]) -> Tensor:
        rows = torch.arange(shape[0], device=canvas.device, dtype=canvas.real.dtype)[:, None]
        cols = torch.arange(shape[1], device=canvas.device, dtype=canvas.real.dtype)[None, :]
        return torch.polar(
            torch.ones((), dtype=canvas.real.dtype, device=canvas.device), kx * cols + ky * rows
        )

    return canvas * ramp(tuple(canvas.shape)).conj(), probe * ramp(tuple(probe.shape))


def _illumination(probe: Tensor, x: Tensor, y: Tensor, problem: _Problem, chunk: int) -> Tensor:
    n = problem.n
    total = probe.real.new_zeros(problem.padded_shape)
    intensity = _intensity(probe)
    for start in range(0, len(x), chunk):
        sel = slice(start, start + chunk)
        win = problem.windows(x[sel], y[sel])
        total += extract_adjoint(intensity.expand(len(win.row0), n, n), win, problem.padded_shape)
    return total


def photons_per_unit(amplitude: np.ndarray, nphotons: float) -> float:
    """q with mean_j Σ q·X_j² = ``nphotons``: the unit of measured intensity X² in photons."""
    energy = float(np.mean(np.sum(np.asarray(amplitude, np.float64) ** 2, axis=(-2, -1))))
    return nphotons / energy if energy > 0 and math.isfinite(energy) else 1.0
