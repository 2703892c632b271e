"""The scaling contract's constants (``specs/physics-contract.md``), frozen from the training set."""

from __future__ import annotations

import math

import numpy as np
import torch
from attrs import field, frozen

from ptycho_spec.schema import Model
from runner.data.grouping import input_scale
from runner.physics.probe import initial_gain, normalize_probe, probe_mask


def _positive_finite(_inst: object, attribute: object, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        msg = f"{attribute.name} must be a positive finite number (got {value})"  # type: ignore[attr-defined]
        raise ValueError(msg)


@frozen(kw_only=True)
class ScalingConstants:
    """Plain floats the runner records with the run; together they fix every unit.

    ``input_scale`` r: network input x = r·X, so the training set's mean Σx² is (N/2)².
    ``photon_scale`` S = sqrt(nphotons)/(N/2): expected photons λ = (S·A)², measured k = (S·x)².
    ``mean_photons`` Ī = nphotons: the Poisson loss is per photon, divided by this constant.
    ``initial_gain`` g₀ = sqrt((N/2)²/Σ|M·P̂|²)/a₀, a₀ = ½: the start value of the output gain g.
    """

    input_scale: float = field(converter=float, validator=_positive_finite)
    photon_scale: float = field(converter=float, validator=_positive_finite)
    mean_photons: float = field(converter=float, validator=_positive_finite)
    initial_gain: float = field(converter=float, validator=_positive_finite)

    @classmethod
    def from_training(
        cls, amplitude: np.ndarray, *, model: Model, nphotons: float, probe: np.ndarray
    ) -> ScalingConstants:
        """Constants of a training set: measured amplitudes ``(M, N, N)`` (bad pixels already
        zeroed), the resolved ``model``, the data's photons per pattern and the stored probe
        ``(N, N)`` complex (normalized here exactly as ``PtychoPINN`` normalizes it)."""
        n = int(model.N)
        mask = probe_mask(n) if model.probe_mask else None
        probe_hat = normalize_probe(
            torch.as_tensor(np.asarray(probe, np.complex64)), model.probe_scale, mask
        )
        return cls(
            input_scale=input_scale(amplitude, n),
            photon_scale=math.sqrt(nphotons) / (n / 2),
            mean_photons=nphotons,
            initial_gain=initial_gain(probe_hat, mask),
        )

    def network_input(self, amplitude: np.ndarray) -> np.ndarray:
        """x = r·X: measured amplitudes ``(..., N, N)`` → network units, float32."""
        return to_network_units(amplitude, self.input_scale)


def to_network_units(amplitude: np.ndarray, r: float) -> np.ndarray:
    """x = r·X ``(..., N, N)`` float32, multiplied in float64."""
    return (np.asarray(amplitude, dtype=np.float64) * r).astype(np.float32)


CHUNK_PATTERNS = 1024  # patterns summed at once: bounds the float64 temporaries


@frozen(kw_only=True)
class InputCentering:
    """The generator's input normalization (``model.center_input``), frozen from the training
    patterns: the generator sees (x − ``mean``)/``spread``, with ``mean`` ``(N, N)`` float32 the
    mean training pattern in network units and ``spread`` the standard deviation of the
    patterns about it over every pixel.

    Every pattern is mostly the probe's own diffraction; what the object changes is a small part
    of x, and for a weak object a very small one. Fed x itself, the generator's features barely
    differ from one position to the next and training sits on a flat object (the weak-phase
    "cells" of ``benchmarks/quality.py`` stayed flat for 12 of 16 epochs). Centred and scaled,
    the changes are the whole input (benchmarks/RESULTS.md, "Centred inputs").
    """

    mean: np.ndarray = field(converter=lambda a: np.asarray(a, np.float32))
    spread: float = field(converter=float, validator=_positive_finite)

    @classmethod
    def from_training(cls, amplitude: np.ndarray, *, input_scale: float) -> InputCentering:
        """Of the training set's measured amplitudes ``(M, N, N)`` (bad pixels already zeroed)
        in network units x = r·X, r = ``input_scale``; summed in float64, chunk by chunk."""
        chunks = np.array_split(np.asarray(amplitude), max(1, len(amplitude) // CHUNK_PATTERNS))
        mean = sum(chunk.sum(axis=0, dtype=np.float64) for chunk in chunks) * input_scale
        mean /= len(amplitude)
        squares = sum(
            float(np.square(chunk.astype(np.float64) * input_scale - mean).sum())
            for chunk in chunks
        )
        return cls(mean=mean, spread=math.sqrt(squares / (len(amplitude) * mean.size)))
