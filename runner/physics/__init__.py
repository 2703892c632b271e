"""Differentiable PtychoPINN physics: small pure tensor functions, each tested on its own.

The pipeline of one training step (``runner/models/pinn.py`` composes it):

    object patches O (B, C, N, N) complex
      -> [gridsize > 1 and object_big]  merge_patches / extract_patches (overlap constraint)
      -> illuminate(O, P̂)            ψ = O · P̂
      -> [σ > 0]  gaussian_smooth(ψ)
      -> [probe_mask]  ψ · M
      -> far_field(ψ)                 orthonormal FFT2, DC at (N/2, N/2)
      -> g · amplitude(Ψ)             predicted amplitude A in network units
      -> poisson_nll / amplitude_mae against the measured x = r·X

Units and constants are in ``specs/physics-contract.md``.
"""

from runner.physics.losses import amplitude_mae, poisson_nll, supervised_l1, total_variation
from runner.physics.probe import initial_gain, normalize_probe, probe_mask
from runner.physics.propagate import amplitude, far_field, gaussian_smooth, illuminate
from runner.physics.scaling import ScalingConstants
from runner.physics.shift import crop_patches, extract_patches, merge_patches, translate

__all__ = [
    "ScalingConstants",
    "amplitude",
    "amplitude_mae",
    "crop_patches",
    "extract_patches",
    "far_field",
    "gaussian_smooth",
    "illuminate",
    "initial_gain",
    "merge_patches",
    "normalize_probe",
    "poisson_nll",
    "probe_mask",
    "supervised_l1",
    "total_variation",
    "translate",
]
