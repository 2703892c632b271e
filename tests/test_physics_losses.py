"""Loss terms: Poisson NLL, amplitude MAE, supervised L1 and total variation."""

from __future__ import annotations

import math

import pytest
import torch

from runner.physics.losses import amplitude_mae, poisson_nll, supervised_l1, total_variation

S, I_BAR = 31.25, 1e6  # photon scale sqrt(1e6)/32 and mean photons of a 64 px, 1e6-photon set


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


class TestPoissonNLL:
    def test_equals_the_poisson_log_likelihood_per_photon(self) -> None:
        """L = −mean_b Σ log Poisson(k; λ) / Ī with λ = (S·A)², k = (S·x)²."""
        pred = rand(3, 2, 8, 8) + 0.1
        counts = torch.poisson((S * pred.double()) ** 2, generator=torch.Generator().manual_seed(1))
        observed = (counts.sqrt() / S).float()
        lam = (S * pred.double()) ** 2
        k = (S * observed.double()) ** 2
        expected = (
            -torch.distributions.Poisson(lam).log_prob(k.round()).sum(dim=(1, 2, 3)).mean() / I_BAR
        )
        loss = poisson_nll(pred, observed, photon_scale=S, mean_photons=I_BAR)
        assert loss.dtype == torch.float64
        assert float(loss) == pytest.approx(float(expected), rel=1e-6)

    def test_stationary_at_the_measurement(self) -> None:
        """The gradient vanishes where the prediction equals the measurement."""
        observed = rand(2, 1, 8, 8) + 0.5
        pred = observed.clone().requires_grad_()
        poisson_nll(pred, observed, photon_scale=S, mean_photons=I_BAR).backward()
        assert float(pred.grad.abs().max()) < 1e-9

    def test_independent_of_batch_composition(self) -> None:
        """A batch's loss is the mean of its samples' losses: no batch statistic."""
        pred, observed = rand(4, 1, 8, 8, seed=2), rand(4, 1, 8, 8, seed=3)
        whole = poisson_nll(pred, observed, photon_scale=S, mean_photons=I_BAR)
        parts = [
            poisson_nll(pred[i : i + 1], observed[i : i + 1], photon_scale=S, mean_photons=I_BAR)
            for i in range(4)
        ]
        assert float(whole) == pytest.approx(float(sum(parts) / 4), rel=1e-12)
        brighter = observed.clone()
        brighter[3] *= 10
        first = poisson_nll(pred[:1], observed[:1], photon_scale=S, mean_photons=I_BAR)
        assert float(first) == float(
            poisson_nll(pred[:1], brighter[:1], photon_scale=S, mean_photons=I_BAR)
        )

    def test_mask_excludes_pixels(self) -> None:
        """Values at masked-out pixels do not change the loss."""
        pred, observed = rand(2, 1, 8, 8, seed=4), rand(2, 1, 8, 8, seed=5)
        mask = torch.ones(8, 8, dtype=torch.bool)
        mask[2, 3] = False
        spoiled = observed.clone()
        spoiled[..., 2, 3] = 100.0
        a = poisson_nll(pred, observed, photon_scale=S, mean_photons=I_BAR, mask=mask)
        b = poisson_nll(pred, spoiled, photon_scale=S, mean_photons=I_BAR, mask=mask)
        assert float(a) == float(b)
        assert float(a) != float(poisson_nll(pred, spoiled, photon_scale=S, mean_photons=I_BAR))

    def test_finite_at_zero_prediction(self) -> None:
        """λ = 0 with photons measured stays finite (ε in the log)."""
        loss = poisson_nll(
            torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4), photon_scale=S, mean_photons=I_BAR
        )
        assert math.isfinite(float(loss))


class TestAmplitudeMAE:
    def test_mean_absolute_difference(self) -> None:
        """The mean of |A − x| over all pixels."""
        pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        assert float(amplitude_mae(pred, torch.zeros_like(pred))) == pytest.approx(2.5)

    def test_mask_weights(self) -> None:
        """Masked pixels count neither in the sum nor in the pixel count."""
        pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        mask = torch.tensor([[True, False], [False, False]])
        assert float(amplitude_mae(pred, torch.zeros_like(pred), mask=mask)) == pytest.approx(1.0)


class TestSupervisedL1:
    def test_reference_weights(self) -> None:
        """2·L1(amplitude) + 4·L1(phase)."""
        target = torch.ones(1, 1, 2, 2, dtype=torch.complex64)
        pred = torch.polar(torch.full((1, 1, 2, 2), 1.5), torch.full((1, 1, 2, 2), 0.25))
        assert float(supervised_l1(pred, target)) == pytest.approx(2 * 0.5 + 4 * 0.25, rel=1e-6)

    def test_phase_error_is_wrapped(self) -> None:
        """Phases π − 0.1 and −π + 0.1 are 0.2 apart, not 2π − 0.2."""
        target = torch.polar(torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), math.pi - 0.1))
        pred = torch.polar(torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), -math.pi + 0.1))
        assert float(supervised_l1(pred, target)) == pytest.approx(4 * 0.2, rel=1e-5)


class TestTotalVariation:
    def test_constant_object_has_none(self) -> None:
        """A constant complex object has zero variation."""
        assert float(total_variation(torch.full((1, 1, 5, 5), 2 + 1j))) == 0.0

    def test_ramp(self) -> None:
        """A ramp of slope 1 along x: mean horizontal difference 1, vertical 0."""
        ramp = torch.arange(6.0).expand(1, 1, 4, 6).to(torch.complex64)
        assert float(total_variation(ramp)) == pytest.approx(1.0)

    def test_mask_keeps_inner_differences(self) -> None:
        """Differences reaching outside the mask are ignored."""
        obj = torch.zeros(1, 1, 4, 4, dtype=torch.complex64)
        obj[..., 0, :] = 10
        mask = torch.ones(4, 4)
        mask[0] = 0
        assert float(total_variation(obj, mask=mask)) == 0.0
        assert float(total_variation(obj)) > 0.0
