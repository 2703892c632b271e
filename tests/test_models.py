"""The generator registry, the PtychoPINN CNN and the composed ``PtychoPINN`` module."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest
import torch
from torch import nn

from runner.data.simulate import disk_probe, lines_object, noiseless_amplitude, raster_positions
from runner.models.cnn import UpConv, build_cnn
from runner.models.pinn import PtychoPINN
from runner.models.registry import GENERATORS, build_generator, find_generator, make_registry
from runner.physics.propagate import far_field
from runner.physics.scaling import InputCentering, ScalingConstants
from runner.physics.shift import crop_patches, extract_patches, merge_patches

# float(t) of a tensor that carries a graph warns; these tests read values out of such tensors
pytestmark = pytest.mark.filterwarnings(
    "ignore:Converting a tensor with requires_grad=True:UserWarning"
)

UNIT = ScalingConstants(input_scale=1.0, photon_scale=1.0, mean_photons=1.0, initial_gain=1.0)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inputs(b: int, c: int, n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, n, n, generator=torch.Generator().manual_seed(seed))


def pinn(model, *, seed: int = 0, scaling: ScalingConstants = UNIT) -> PtychoPINN:
    torch.manual_seed(seed)
    return PtychoPINN(model=model, probe=torch.from_numpy(disk_probe(model.N)), scaling=scaling)


class TestRegistry:
    def test_cnn_registered(self, make_model) -> None:
        """'cnn' builds the CNN generator."""
        assert "cnn" in GENERATORS
        assert type(build_generator(model=make_model())) is type(build_cnn(model=make_model()))

    def test_duplicate_name_raises(self) -> None:
        with pytest.raises(ValueError, match="already registered under the name 'cnn'"):
            make_registry([("cnn", build_cnn), ("cnn", build_cnn)])

    def test_unknown_name_lists_choices(self, make_model) -> None:
        with pytest.raises(ValueError, match="unknown generator architecture 'unet'; choices: cnn"):
            find_generator("unet")
        with pytest.raises(ValueError, match="choices"):
            build_generator(model=make_model(architecture="unet"))

    def test_table_is_read_only(self) -> None:
        with pytest.raises(TypeError):
            GENERATORS["x"] = build_cnn  # type: ignore[index]


class TestCNN:
    def test_reference_parameter_count(self, make_model) -> None:
        """N = 64, C = 1, n_filters_scale = 2: within 5 % of the reference's 2.34 M."""
        count = n_params(build_cnn(model=make_model(n_filters_scale=2)))
        assert count == 2_331_772
        assert abs(count / 2.34e6 - 1) < 0.05

    @pytest.mark.parametrize("n", [64, 128, 256])
    def test_shapes_for_each_n(self, make_model, n: int) -> None:
        """(B, 1, N, N) in, amplitude and phase (B, 1, N, N) out; an 8 × 8 bottleneck."""
        net = build_cnn(model=make_model(N=n))
        amp, phase = net(inputs(1, 1, n))
        assert amp.shape == phase.shape == (1, 1, n, n)
        assert net.encoder(inputs(1, 1, n)).shape[-1] == 8

    def test_heads_are_bounded_on_the_centre(self, make_model) -> None:
        """Sigmoid amplitude in (0, 1) and phase in (−π, π) on the central N/2 region."""
        with torch.no_grad():
            amp, phase = build_cnn(model=make_model())(inputs(2, 1) * 50)
        centre = (..., slice(16, 48), slice(16, 48))
        assert 0 < float(amp[centre].min()) and float(amp[centre].max()) < 1
        assert float(phase[centre].abs().max()) < math.pi

    def test_channels_follow_object_big(self, make_model) -> None:
        """gridsize 2 with object_big: 4 input and output channels; without: 1."""
        big = build_cnn(model=make_model(gridsize=2, object_big=True))
        assert big(inputs(2, 4))[0].shape == (2, 4, 64, 64)
        assert n_params(big) > n_params(build_cnn(model=make_model(gridsize=2, object_big=False)))

    def test_upconv_is_conv_of_upsampled(self) -> None:
        """UpConv(x) = Conv3×3(nearest-upsample×2(x)) with the same weights, values and gradients."""
        torch.manual_seed(0)
        up = UpConv(5, 3, 3, padding=1).double()
        plain = nn.Conv2d(5, 3, 3, padding=1).double()
        plain.load_state_dict(up.state_dict())
        x = torch.randn(2, 5, 6, 7, dtype=torch.float64)
        torch.testing.assert_close(up(x), plain(nn.functional.interpolate(x, scale_factor=2)))
        up(x).square().sum().backward()
        plain(nn.functional.interpolate(x, scale_factor=2)).square().sum().backward()
        torch.testing.assert_close(up.weight.grad, plain.weight.grad)


class TestModelFields:
    """Every ``Model`` field changes what the module computes."""

    def test_n(self, make_model) -> None:
        out = pinn(make_model(N=128))(inputs(1, 1, 128), torch.zeros(1, 1, 2))
        assert out.amplitude.shape == (1, 1, 128, 128)

    def test_gridsize(self, make_model) -> None:
        out = pinn(make_model(gridsize=2))(inputs(2, 4), torch.zeros(2, 4, 2))
        assert out.object.shape == out.amplitude.shape == (2, 4, 64, 64)

    def test_model_type(self, make_model) -> None:
        """Supervised models return no diffraction (their loss compares objects only)."""
        assert (
            pinn(make_model(model_type="supervised"))(inputs(1, 1), torch.zeros(1, 1, 2)).amplitude
            is None
        )
        assert pinn(make_model())(inputs(1, 1), torch.zeros(1, 1, 2)).amplitude is not None

    def test_architecture(self, make_model) -> None:
        with pytest.raises(ValueError, match="choices: cnn"):
            pinn(make_model(architecture="fno"))

    def test_n_filters_scale(self, make_model) -> None:
        assert n_params(pinn(make_model(n_filters_scale=2))) > 3 * n_params(
            pinn(make_model(n_filters_scale=1))
        )

    def test_amp_activation(self, make_model) -> None:
        x = inputs(1, 1)
        sig = pinn(make_model()).predict_object(x)
        relu = pinn(make_model(amp_activation="relu")).predict_object(x)
        centre = (..., slice(16, 48), slice(16, 48))
        assert float(sig.abs()[centre].min()) > 0
        assert float((relu.abs()[centre] == 0).float().mean()) > 0.05  # ReLU clips to exact zeros

    def test_object_big(self, make_model) -> None:
        """Without object_big the 4 channels are independent samples of one-channel patches."""
        x, rel = (
            inputs(2, 4),
            torch.tensor([[[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]]]).expand(2, 4, 2),
        )
        small = pinn(make_model(gridsize=2, object_big=False))
        objs = small.predict_object(x)
        torch.testing.assert_close(objs[1, 2:3], small.predict_object(x[1:2, 2:3])[0])
        torch.testing.assert_close(small(x, rel).amplitude, small.diffract(objs))
        big = pinn(make_model(gridsize=2, object_big=True))
        for conv in big.modules():  # zero output layers would predict 4 equal, flat patches
            if isinstance(conv, torch.nn.Conv2d):
                torch.nn.init.normal_(conv.weight, std=0.1)
        out = big(x, rel)
        merged = extract_patches(merge_patches(out.object, rel, big.merge_window()), rel, 64)
        torch.testing.assert_close(out.amplitude, big.diffract(merged))  # merged before physics
        unmerged = big.diffract(out.object)
        assert float((out.amplitude - unmerged).abs().max()) > 1e-2 * float(unmerged.abs().max())

    def test_probe_big(self, make_model) -> None:
        """The outer N/4 border of the object is zero unless probe_big; with it, the border
        path fills the border once its (zero-initialized) output layer has weights."""
        x = inputs(1, 1)
        border = torch.ones(64, 64, dtype=torch.bool)
        border[16:48, 16:48] = False
        small, big = pinn(make_model(probe_big=False)), pinn(make_model(probe_big=True))
        for net in (small, big):
            for conv in net.modules():
                if isinstance(conv, torch.nn.Conv2d):
                    torch.nn.init.normal_(conv.weight, std=0.1)
        assert float(small.predict_object(x)[..., border].abs().max()) == 0
        assert float(big.predict_object(x)[..., border].abs().max()) > 0

    def test_pad_object(self, make_model) -> None:
        """Without pad_object the head's activation covers all N × N pixels, border included."""
        x = inputs(1, 1)
        padded = pinn(make_model(probe_big=False)).predict_object(x)
        full = pinn(make_model(probe_big=False, pad_object=False)).predict_object(x)
        assert float(padded.abs()[..., :16, :].max()) == 0
        assert float(full.abs()[..., :16, :].min()) > 0  # a sigmoid amplitude is never exactly 0

    def test_merge_window_is_the_object_support(self, make_model) -> None:
        """The group canvas weights a padded object by its central box (None: the default) and a
        full-window one by the probe's intensity, peak 1."""
        assert pinn(make_model()).merge_window() is None
        net = pinn(make_model(pad_object=False, probe_big=False))
        lit = net.illumination_intensity()
        torch.testing.assert_close(net.merge_window(), lit / lit.max())

    def test_probe_mask(self, make_model) -> None:
        """With probe_mask the exit wave is M·O·P̂."""
        net = pinn(make_model(probe_mask=True))
        obj = net.predict_object(inputs(1, 1))
        expected = far_field(obj * net.probe * net.mask).abs()
        torch.testing.assert_close(net.diffract(obj), expected)
        assert not torch.allclose(pinn(make_model()).diffract(obj), expected)

    def test_probe_scale(self, make_model) -> None:
        """The probe is normalized once to mean|P̂| = 1/probe_scale."""
        for scale in (2.0, 4.0):
            assert float(pinn(make_model(probe_scale=scale)).probe.abs().mean()) == pytest.approx(
                1 / scale, rel=1e-5
            )

    def test_gaussian_smoothing_sigma(self, make_model) -> None:
        obj = pinn(make_model()).predict_object(inputs(1, 1))
        sharp = pinn(make_model()).diffract(obj)
        smooth = pinn(make_model(gaussian_smoothing_sigma=1.0)).diffract(obj)
        # smoothing the exit wave is a low-pass filter: it removes high-frequency energy
        high = torch.ones(64, 64, dtype=torch.bool)
        high[16:48, 16:48] = False
        assert float((smooth[..., high] ** 2).sum()) < float((sharp[..., high] ** 2).sum())

    @pytest.mark.parametrize(
        ("field", "name"),
        [("probe_trainable", "probe_ri"), ("intensity_scale_trainable", "log_gain")],
    )
    def test_trainable_flags(self, make_model, field: str, name: str) -> None:
        """A parameter (with a gradient) when trainable, a buffer otherwise."""
        on, off = pinn(make_model(**{field: True})), pinn(make_model(**{field: False}))
        assert name in dict(on.named_parameters()) and name not in dict(off.named_parameters())
        assert name in dict(off.named_buffers())
        on(inputs(1, 1), torch.zeros(1, 1, 2)).amplitude.sum().backward()
        assert float(getattr(on, name).grad.abs().sum()) > 0


class TestPtychoPINN:
    def test_forward_reproduces_the_simulator(self, make_model) -> None:
        """A known object through the model's physics gives the simulator's noiseless patterns."""
        obj, probe = lines_object(80, seed=2), disk_probe(64)
        x, y = raster_positions(80, 64, 8)
        net = PtychoPINN(model=make_model(), probe=torch.from_numpy(probe), scaling=UNIT)
        patches = crop_patches(torch.from_numpy(obj), torch.from_numpy(x), torch.from_numpy(y), 64)[
            :, None
        ]
        clean = noiseless_amplitude(obj, probe, x, y, probe_scale=4.0)
        torch.testing.assert_close(
            net.diffract(patches)[:, 0].double(), clean, rtol=1e-4, atol=1e-5 * float(clean.max())
        )

    @pytest.mark.parametrize("center", [True, False])
    def test_generator_input(self, make_model, center: bool) -> None:
        """With ``center_input`` the generator sees (x − x̄)/s and the model keeps x̄ and s as
        buffers (into its state dict, so a bundle carries them); without it, x itself."""
        model = attrs.evolve(make_model(), center_input=center)
        mean = torch.linspace(0, 1, 64 * 64).reshape(64, 64)
        centering = InputCentering(mean=mean.numpy(), spread=0.25)
        net = PtychoPINN(
            model=model, probe=torch.from_numpy(disk_probe(64)), scaling=UNIT, centering=centering
        )
        seen = []

        def record(_module, args, output):
            seen.append(args[0].detach().clone())

        net.generator.register_forward_hook(record)
        x = inputs(2, 1)
        net.predict_object(x)
        expected = (x - mean) / 0.25 if center else x
        torch.testing.assert_close(seen[0], expected)
        assert ({"input_mean", "input_spread"} <= set(net.state_dict())) is center

    def test_initial_gain(self, make_model) -> None:
        """g starts at the scaling's initial gain."""
        net = pinn(make_model(), scaling=attrs.evolve(UNIT, initial_gain=2.5))
        assert float(torch.exp(net.log_gain)) == pytest.approx(2.5)

    def test_gradients_finite(self, make_model) -> None:
        """Through the generator, the overlap constraint and the physics."""
        net = pinn(make_model(gridsize=2, object_big=True))
        rel = torch.tensor([[[1.5, 2.0], [-1.5, 2.0], [1.5, -2.0], [-1.5, -2.0]]])
        net(inputs(1, 4), rel).amplitude.sum().backward()
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)

    def test_float32_matches_float64(self, make_model) -> None:
        """Single and double precision agree on the whole forward pass."""
        net = pinn(make_model(gridsize=2, object_big=True))
        x, rel = inputs(1, 4), torch.tensor([[[1.5, 2.0], [-1.5, 2.0], [1.5, -2.0], [-1.5, -2.0]]])
        lo = net(x, rel).amplitude
        hi = net.double()(x.double(), rel.double()).amplitude
        torch.testing.assert_close(lo.double(), hi, rtol=1e-4, atol=1e-4 * float(hi.abs().max()))

    def test_state_dict_round_trip(self, make_model) -> None:
        """A strict reload into a fresh module reproduces the outputs."""
        model = make_model(probe_trainable=True)
        a, b = pinn(model, seed=1), pinn(model, seed=2)
        with torch.no_grad():
            a.log_gain.add_(0.1)
        b.load_state_dict(a.state_dict(), strict=True)
        x = inputs(1, 1)
        torch.testing.assert_close(
            b(x, torch.zeros(1, 1, 2)).amplitude, a(x, torch.zeros(1, 1, 2)).amplitude
        )

    def test_illumination_intensity(self, make_model) -> None:
        """The stitching weight is |M·P̂|²: the masked, normalized probe's intensity."""
        plain, masked = pinn(make_model()), pinn(make_model(probe_mask=True))
        torch.testing.assert_close(plain.illumination_intensity(), plain.probe.abs().square())
        torch.testing.assert_close(
            masked.illumination_intensity(), (masked.probe * masked.mask).abs().square()
        )
        assert float(masked.illumination_intensity()[0, 0]) == 0 < float(masked.mask[32, 32])

    def test_predict_object_is_the_generator(self, make_model) -> None:
        """predict_object combines the generator's amplitude and phase heads, nothing else."""
        net = pinn(make_model())
        x = inputs(1, 1)
        amp, phase = net.generator(x)
        torch.testing.assert_close(net.predict_object(x), amp * torch.exp(1j * phase))
        assert np.isclose(float(net.predict_object(x).abs().max()), float(amp.max()))
