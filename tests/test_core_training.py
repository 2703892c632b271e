"""End to end through the numerical core: the generator learns an object from diffraction alone.

A 112 px crop of a reference-sized (392 px) lines object, raster-scanned at 4 px with the disk
probe, 1e6 photons per pattern; gridsize 2 groups with the overlap constraint (which also
resolves the twin-image ambiguity a real, centro-symmetric probe leaves a single pattern);
400 Adam steps of 8 groups on the Poisson loss; then stitching and the reference metrics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from runner.data.grouping import group_scan
from runner.data.simulate import disk_probe, lines_object, raster_positions, simulate_scan
from runner.infer.stitch import stitch
from runner.metrics import evaluate
from runner.models.pinn import PtychoPINN
from runner.physics.losses import poisson_nll
from runner.physics.scaling import ScalingConstants

N, SIZE, STEPS, BATCH = 64, 112, 400, 8


@pytest.mark.slow
def test_pinn_beats_a_flat_object(make_model) -> None:
    """Stitched amplitude and phase beat a flat object by a clear SSIM margin (and phase MAE)."""
    obj = lines_object(392, seed=0)[80 : 80 + SIZE, 120 : 120 + SIZE]
    probe = disk_probe(N)
    x, y = raster_positions(SIZE, N, 4)
    scan = simulate_scan(obj, probe, x, y, nphotons=1e6, probe_scale=4.0, noise_seed=1)
    model = make_model(gridsize=2, object_big=True)
    scaling = ScalingConstants.from_training(scan.amplitude, model=model, nphotons=1e6, probe=probe)
    groups = group_scan(
        x, y, gridsize=2, n_groups="all", neighbor_count=4, sequential=False, seed=0
    )
    inputs = torch.from_numpy(scaling.network_input(scan.amplitude))[
        torch.from_numpy(groups.indices)
    ]
    relative = torch.from_numpy(groups.relative).float()

    torch.manual_seed(0)
    net = PtychoPINN(model=model, probe=torch.from_numpy(probe), scaling=scaling)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(STEPS):
        batch = torch.randint(0, len(inputs), (BATCH,), generator=order)
        pred = net(inputs[batch], relative[batch])
        loss = poisson_nll(
            pred.amplitude,
            inputs[batch],
            photon_scale=scaling.photon_scale,
            mean_photons=scaling.mean_photons,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
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
