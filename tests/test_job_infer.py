"""Reconstruction in the runner (``runner/infer/reconstruct.py``): ``inference.stitch`` as applied to
a model's patches, and the flat-object check after training."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pytest
import torch
from torch import nn

from ptycho_spec.schema import Canonical, Inference
from runner.data.grouping import input_scale
from runner.infer.reconstruct import flat_heads, stitch_groups
from runner.infer.stitch import stitch
from runner.models.pinn import PtychoPINN
from runner.physics.scaling import ScalingConstants

UNIT = ScalingConstants(input_scale=1.0, photon_scale=1.0, mean_photons=1.0, initial_gain=1.0)


def canonical(make_model: Any, **inference: Any) -> Canonical:
    return attrs.evolve(Canonical(), model=make_model(), inference=Inference(**inference))


def net_for(make_model: Any, probe: np.ndarray) -> PtychoPINN:
    return PtychoPINN(model=make_model(), probe=torch.from_numpy(probe), scaling=UNIT)


class TestStitchGroups:
    """``inference.stitch`` as the runner applies it to a model's patches."""

    def test_probe_weighting_uses_the_models_illumination(
        self, make_model: Any, tiny_scan: Any
    ) -> None:
        """stitch = "probe" is ``stitch`` with the model's |P̂|² as pixel weight."""
        net = net_for(make_model, tiny_scan.probe)
        patches = np.random.default_rng(0).normal(size=(4, 1, 64, 64)).astype(np.complex64)
        indices = np.arange(4)[:, None]
        c = canonical(make_model, stitch="probe", trim=8, align_patches=False)
        got, weight = stitch_groups(patches, indices, tiny_scan, c=c, net=net, canvas_shape=None)
        expected, expected_weight = stitch(
            patches[:, 0],
            tiny_scan.x_px[:4],
            tiny_scan.y_px[:4],
            trim=8,
            canvas_shape=tiny_scan.object.shape,
            pixel_weight=np.abs(net.probe.numpy()) ** 2,
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weight, expected_weight, rtol=1e-5)

    def test_dark_core_is_refused(self, make_model: Any, tiny_scan: Any) -> None:
        """A probe dark over all the kept region cannot weight anything: a clear RunError."""
        from ptycho_spec.errors import RunError

        ring = np.ones((64, 64), np.complex64)
        ring[8:56, 8:56] = 0
        c = canonical(make_model, stitch="probe", trim=8)
        patches = np.ones((1, 1, 64, 64), np.complex64)
        with pytest.raises(RunError, match="dark over the whole central region"):
            stitch_groups(
                patches,
                np.zeros((1, 1), int),
                tiny_scan,
                c=c,
                net=net_for(make_model, ring),
                canvas_shape=None,
            )


def _output_layers(net: PtychoPINN) -> list[nn.Conv2d]:
    """The heads' output convolutions: the only zero-initialized weights."""
    return [m for m in net.generator.modules() if isinstance(m, nn.Conv2d) and not m.weight.any()]


def collapse_args(c: Canonical, scan: Any) -> dict[str, Any]:
    """``flat_heads``' settings for a CPU check of ``scan`` scaled as training would scale it."""
    scaling = attrs.evolve(UNIT, input_scale=input_scale(scan.amplitude, c.model.N))
    return {"c": c, "scaling": scaling, "device": torch.device("cpu"), "precision": "32-true"}


class TestFlatHeads:
    """``flat_heads``: the heads flat over the lit centre of most patches."""

    def test_an_untrained_generator_is_flat(self, make_model: Any, tiny_scan: Any) -> None:
        """Zero output layers: every patch is amplitude ½, phase 0."""
        c = canonical(make_model)
        net = net_for(make_model, tiny_scan.probe)
        assert flat_heads(net, tiny_scan, **collapse_args(c, tiny_scan)) == ("amplitude", "phase")

    def test_varied_then_saturated(self, make_model: Any, tiny_scan: Any) -> None:
        """Output layers with weights make patches vary; huge output biases saturate the
        sigmoid and tanh heads into flat patches again."""
        c = canonical(make_model)
        net = net_for(make_model, tiny_scan.probe)
        outputs = _output_layers(net)
        assert outputs
        torch.manual_seed(0)
        with torch.no_grad():
            for conv in outputs:
                nn.init.normal_(conv.weight, std=0.05)
        kwargs = collapse_args(c, tiny_scan)
        assert flat_heads(net, tiny_scan, **kwargs) == ()
        with torch.no_grad():
            for conv in outputs:
                conv.bias.fill_(1e3)
        assert flat_heads(net, tiny_scan, **kwargs) == ("amplitude", "phase")

    def test_one_dead_decoder(self, make_model: Any, tiny_scan: Any) -> None:
        """A phase decoder whose last features died (its output layer sees only its bias)
        is found alone, while the amplitude varies."""
        c = canonical(make_model)
        net = net_for(make_model, tiny_scan.probe)
        outputs = _output_layers(net)
        torch.manual_seed(0)
        with torch.no_grad():
            for name, conv in net.generator.named_modules():
                if name.startswith("amplitude") and any(conv is o for o in outputs):
                    nn.init.normal_(conv.weight, std=0.05)
        assert flat_heads(net, tiny_scan, **collapse_args(c, tiny_scan)) == ("phase",)


class TestSplitScan:
    @pytest.mark.parametrize(("m", "fraction"), [(25, 0.2), (3, 0.99), (3, 0.01), (9, 0.5)])
    def test_counts_are_the_locks(self, tiny_scan: Any, m: int, fraction: float) -> None:
        """The runner splits a file into the (train, test) counts the compiler locked, the test
        patterns being those with the largest y."""
        from ptycho_spec.resolve import split_counts
        from runner.run.prepare import split_scan, subset

        scan = subset(tiny_scan, np.arange(m))
        train, test = split_scan(scan, fraction)
        assert (len(train.x_px), len(test.x_px)) == split_counts(m, fraction)
        assert train.y_px.max() <= test.y_px.min()
