"""``PtychoPINN``: the generator composed with the differentiable diffraction physics."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ptycho_spec.schema import Model
from runner.models.registry import build_generator
from runner.physics.probe import normalize_probe, probe_mask
from runner.physics.propagate import amplitude, far_field, gaussian_smooth, illuminate
from runner.physics.scaling import InputCentering, ScalingConstants
from runner.physics.shift import extract_patches, merge_patches


class Prediction(NamedTuple):
    """One forward pass. ``object``: the generator's patches ``(B, C, N, N)`` complex64;
    ``amplitude``: predicted diffraction amplitude A in network units ``(B, C, N, N)`` float32,
    or None for ``model_type = "supervised"``, whose objective never looks at diffraction."""

    object: Tensor
    amplitude: Tensor | None


class PtychoPINN(nn.Module):
    """Network input x = r·X ``(B, C, N, N)`` → object patches and predicted amplitudes.

    The probe is normalized once at construction (P̂ = P / (probe_scale·mean|M·P|)) and kept as
    real/imaginary parts ``(N, N, 2)``: a buffer, or a parameter iff ``probe_trainable``. The
    output gain g = exp(log_gain) starts at ``scaling.initial_gain`` and is a parameter iff
    ``intensity_scale_trainable`` (the TF model's trainable log-scale, ``ptycho/model.py`` ``IntensityScaler``).
    With ``center_input`` the generator sees (x − x̄)/s, ``centering``'s mean pattern x̄
    ``(N, N)`` and spread s kept as buffers: a trained model carries them into its bundle, and
    a model built to load a state dict (``centering`` None) starts with x̄ = 0, s = 1.
    """

    def __init__(
        self,
        *,
        model: Model,
        probe: Tensor,
        scaling: ScalingConstants,
        centering: InputCentering | None = None,
    ) -> None:
        super().__init__()
        self.config = model
        self.n = int(model.N)
        self.channels = model.gridsize**2
        self.generator = build_generator(model=model)
        mask = probe_mask(self.n) if model.probe_mask else None
        self.register_buffer("mask", mask, persistent=False)
        probe_hat = torch.view_as_real(
            normalize_probe(torch.as_tensor(probe).to(torch.complex64), model.probe_scale, mask)
        )
        log_gain = torch.tensor(math.log(scaling.initial_gain), dtype=torch.float32)
        self._keep("probe_ri", probe_hat.clone(), trainable=model.probe_trainable)
        self._keep("log_gain", log_gain, trainable=model.intensity_scale_trainable)
        if model.center_input:
            mean = torch.zeros(self.n, self.n) if centering is None else centering.mean
            spread = 1.0 if centering is None else centering.spread
            self.register_buffer("input_mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("input_spread", torch.tensor(spread, dtype=torch.float32))

    def _keep(self, name: str, value: Tensor, *, trainable: bool) -> None:
        if trainable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    @property
    def probe(self) -> Tensor:
        """The normalized probe P̂ ``(N, N)`` complex64."""
        return torch.view_as_complex(self.probe_ri)

    def illumination_intensity(self) -> Tensor:
        """|M·P̂|² ``(N, N)`` float32: how brightly the model's probe lights each patch pixel."""
        lit = self.probe if self.mask is None else self.probe * self.mask
        return lit.abs().square().detach()

    def merge_window(self) -> Tensor | None:
        """Weight ``(N, N)`` of each patch pixel on the group canvas: the object's support.

        With ``pad_object`` that is the central box (None: ``merge_patches``' default, the
        reference's ``central_mask``). Without it, the illumination |M·P̂|² / max: every pixel
        the probe lights, in proportion. A central box there would cut away the light a wide
        probe puts outside it (28 % of the LCLS probe's), which the network then explains with
        a phase ramp (benchmarks/RESULTS.md, "The group canvas and wide probes").
        """
        if self.config.pad_object:
            return None
        lit = self.illumination_intensity()
        return lit / lit.max()

    def predict_object(self, x: Tensor) -> Tensor:
        """Generator only: ``(B, C, N, N)`` float → object patches ``(B, C, N, N)`` complex64.

        Without ``object_big`` the C channels are independent patterns (B·C samples of 1).
        """
        b, c, n, _ = x.shape
        if self.config.center_input:
            x = (x - self.input_mean.to(x.dtype)) / self.input_spread.to(x.dtype)
        inputs = x if self.config.object_big else x.reshape(b * c, 1, n, n)
        amp, phase = self.generator(inputs)
        # amp·e^{iφ} written out: torch.polar leaves negative moduli undefined, and the SiLU
        # border path can go negative (``ptycho/model.py`` combines them the same way)
        return torch.complex(amp * torch.cos(phase), amp * torch.sin(phase)).reshape(b, c, n, n)

    def diffract(self, obj: Tensor) -> Tensor:
        """Object patches ``(B, C, N, N)`` complex → predicted amplitude A = g·|F(M·smooth(O·P̂))|."""
        psi = gaussian_smooth(illuminate(obj, self.probe), self.config.gaussian_smoothing_sigma)
        if self.mask is not None:
            psi = psi * self.mask
        return torch.exp(self.log_gain) * amplitude(far_field(psi))

    def forward(self, x: Tensor, relative: Tensor) -> Prediction:
        """``x (B, C, N, N)`` float, ``relative (B, C, 2)`` px → ``Prediction``.

        With ``object_big`` and C > 1 the C patches are merged on one canvas and re-extracted
        before illumination (the overlap constraint). Supervised models skip the physics.
        """
        obj = self.predict_object(x)
        if self.config.model_type == "supervised":
            return Prediction(object=obj, amplitude=None)
        seen = obj
        if self.config.object_big and self.channels > 1:
            canvas = merge_patches(obj, relative, self.merge_window())
            seen = extract_patches(canvas, relative, self.n)
        return Prediction(object=obj, amplitude=self.diffract(seen))
