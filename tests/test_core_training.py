"""End to end through the numerical core: the generator learns an object from diffraction alone.

A 112 px crop of a reference-sized (392 px) lines object, raster-scanned at 4 px with the disk
probe; gridsize 2 groups with the overlap constraint (which also resolves the twin-image
ambiguity a real, centro-symmetric probe leaves a single pattern). ``test_pinn_beats_a_flat_object``:
1e6 photons per pattern, 400 Adam steps of 8 groups on the Poisson loss, then stitching and the
reference metrics. ``test_large_steps_keep_learning``: the quickstart's 1e9 photons and the
runner's optimizer (``parameter_groups``) at a learning rate that used to collapse training.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch
from runspec import UNUSED_OPTIONS

from ptycho_spec.resolve import ADAM_WARMUP_STEPS
from ptycho_spec.schema import Training
from runner.data.grouping import group_scan
from runner.data.simulate import disk_probe, lines_object, raster_positions, simulate_scan
from runner.infer.reconstruct import FLAT_AMPLITUDE, FLAT_PHASE_RAD
from runner.infer.stitch import stitch
from runner.metrics import evaluate
from runner.models.pinn import PtychoPINN
from runner.physics.losses import poisson_nll
from runner.physics.scaling import InputCentering, ScalingConstants
from runner.train.optim import build_optimizer, parameter_groups, warmed_up

N, SIZE, STEPS, BATCH = 64, 112, 400, 8
TRAINING = Training(
    nll_weight=1.0,
    mae_weight=0.0,
    nphotons=1e9,
    adam_beta1=0.9,
    adam_beta2=0.999,
    warmup_steps=ADAM_WARMUP_STEPS,  # Adam's default
    **UNUSED_OPTIONS,
)


def wide_probe() -> np.ndarray:
    """A Gaussian probe (σ = 16 px) with a curved phase: 72 % of its intensity on the central
    N/2 box, as the LCLS probe's, so a padded object could not explain its light."""
    r2 = (np.arange(N) - N / 2)[:, None] ** 2 + (np.arange(N) - N / 2)[None, :] ** 2
    return (np.exp(-r2 / (2 * 16.0**2)) * np.exp(0.005j * r2)).astype(np.complex64)


def lines_groups(model, *, nphotons: float, probe: np.ndarray | None = None):
    """The crop's object, scaling constants, groups, inputs ``(G, 4, N, N)`` and relative
    offsets ``(G, 4, 2)`` for ``model`` (gridsize 2), seen through ``probe`` (the disk probe by
    default)."""
    obj = lines_object(392, seed=0)[80 : 80 + SIZE, 120 : 120 + SIZE]
    probe = disk_probe(N) if probe is None else probe
    x, y = raster_positions(SIZE, N, 4)
    scan = simulate_scan(obj, probe, x, y, nphotons=nphotons, probe_scale=4.0, noise_seed=1)
    scaling = ScalingConstants.from_training(
        scan.amplitude, model=model, nphotons=nphotons, probe=probe
    )
    groups = group_scan(
        x, y, gridsize=2, n_groups="all", neighbor_count=4, sequential=False, seed=0
    )
    inputs = torch.from_numpy(scaling.network_input(scan.amplitude))[
        torch.from_numpy(groups.indices)
    ]
    return obj, probe, scaling, groups, inputs, torch.from_numpy(groups.relative).float()


def centered(inputs: torch.Tensor) -> InputCentering:
    """The runner's input centering of training inputs ``(G, C, N, N)``."""
    return InputCentering.from_training(inputs.reshape(-1, N, N).numpy(), input_scale=1.0)


def train(
    net, optimizer, scaling, inputs, relative, *, steps: int, batch: int, warmup_steps: int = 0
) -> list[float]:
    """``steps`` optimizer steps on random batches of ``batch`` groups (seeded), the first
    ``warmup_steps`` warmed up as the runner does; the losses."""
    order = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        pick = torch.randint(0, len(inputs), (batch,), generator=order)
        pred = net(inputs[pick], relative[pick])
        loss = poisson_nll(
            pred.amplitude,
            inputs[pick],
            photon_scale=scaling.photon_scale,
            mean_photons=scaling.mean_photons,
        )
        optimizer.zero_grad()
        loss.backward()
        with warmed_up(optimizer, step=step, warmup_steps=warmup_steps):
            optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_pinn_beats_a_flat_object(make_model) -> None:
    """Stitched amplitude and phase beat a flat object by a clear SSIM margin (and phase MAE)."""
    model = make_model(gridsize=2, object_big=True)
    obj, probe, scaling, groups, inputs, relative = lines_groups(model, nphotons=1e6)

    torch.manual_seed(0)
    net = PtychoPINN(
        model=model, probe=torch.from_numpy(probe), scaling=scaling, centering=centered(inputs)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = train(net, optimizer, scaling, inputs, relative, steps=STEPS, batch=BATCH)
    assert np.mean(losses[-50:]) < 0.3 * np.mean(losses[:50])

    with torch.inference_mode():
        patches = net.predict_object(inputs).reshape(-1, N, N).numpy()
    px, py = groups.coords[..., 0].ravel(), groups.coords[..., 1].ravel()
    rec, weight = stitch(patches, px, py, trim=20, canvas_shape=obj.shape)
    flat, _ = stitch(np.ones_like(patches), px, py, trim=20, canvas_shape=obj.shape)
    ours, baseline = evaluate(rec, obj, weight=weight), evaluate(flat, obj, weight=weight)
    assert ours.amplitude.ssim > baseline.amplitude.ssim + 0.25
    assert ours.phase.ssim > baseline.phase.ssim + 0.05
    assert ours.phase.mae < 0.6 * baseline.phase.mae


@pytest.mark.parametrize(
    ("wide", "pad"),
    [(False, True), (False, False), (True, False)],
    ids=["disk-padded", "disk-full-window", "wide-full-window"],
)
def test_large_steps_keep_learning(make_model, wide: bool, pad: bool) -> None:
    """Adam at lr 8e-3, batch 8, through the runner's fan-in-scaled groups, its 10-step
    warm-up and its centred input: the loss stays within a few times its start and the
    patches stay varied. Measured with 1 to 3 threads, whose float sums differ: peak
    1.1-1.7× the first loss, the last 10 steps 0.3-0.5× it, median stds amplitude 0.031-0.050
    and phase 0.12-0.33 rad (floors 0.01 and 0.05); uncentred, the last steps sit at 0.5-0.9×. Without the warm-up the first
    step of the phase decoder lifts the loss 9.5× with the disk probe and the full window and
    the amplitude ends flat (median std 0.007); with one learning rate for every weight the
    same 40 steps saturate both heads: the loss jumps to 32× its start and the patches end
    exactly flat."""
    model = attrs.evolve(make_model(gridsize=2, object_big=True), pad_object=pad, probe_big=pad)
    _, probe, scaling, _, inputs, relative = lines_groups(
        model, nphotons=1e9, probe=wide_probe() if wide else None
    )
    training = attrs.evolve(TRAINING, learning_rate=8e-3)

    torch.manual_seed(0)
    net = PtychoPINN(
        model=model, probe=torch.from_numpy(probe), scaling=scaling, centering=centered(inputs)
    )
    optimizer = build_optimizer(parameter_groups(net, training), training)
    losses = train(
        net,
        optimizer,
        scaling,
        inputs,
        relative,
        steps=40,
        batch=8,
        warmup_steps=training.warmup_steps,
    )
    assert max(losses) < 4 * losses[0]

    with torch.inference_mode():
        centre = net.predict_object(inputs[:16])[..., 16:48, 16:48]
    phase = torch.angle(centre * centre.mean(dim=(-2, -1), keepdim=True).conj())
    assert float(centre.abs().std(dim=(-2, -1)).median()) > 10 * FLAT_AMPLITUDE
    assert float(phase.std(dim=(-2, -1)).median()) > 5 * FLAT_PHASE_RAD
