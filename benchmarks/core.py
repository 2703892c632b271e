"""Throughput of the numerical core: training steps and inference, in patterns per second.

A training step is forward (generator + overlap constraint + physics) + Poisson loss + backward
+ Adam step; inference is the generator alone under ``torch.inference_mode``. Each figure is the
median over ``--repeats`` timed repetitions after ``--warmup`` untimed ones, on data already on
the device. Usage::

    python benchmarks/core.py                 # CPU, 2 threads, N = 64 and 128, gridsize 1 and 2
    python benchmarks/core.py --device cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from hardware import cpu_model

from ptycho_spec.schema import Model
from runner.data.simulate import disk_probe
from runner.models.pinn import PtychoPINN
from runner.physics.losses import poisson_nll
from runner.physics.scaling import ScalingConstants


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(
    fn: Callable[[], object], *, device: torch.device, warmup: int, repeats: int
) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _setup(
    n: int, gridsize: int, batch: int, device: torch.device
) -> tuple[PtychoPINN, ScalingConstants, torch.Tensor, torch.Tensor]:
    model = Model(N=n, gridsize=gridsize, object_big=gridsize > 1, pad_object=True, probe_big=True)
    probe = disk_probe(n)
    gen = np.random.default_rng(0)
    amplitude = gen.random((batch * gridsize**2, n, n), dtype=np.float32)
    scaling = ScalingConstants.from_training(amplitude, model=model, nphotons=1e6, probe=probe)
    torch.manual_seed(0)
    net = PtychoPINN(model=model, probe=torch.from_numpy(probe), scaling=scaling).to(device)
    x = (
        torch.from_numpy(scaling.network_input(amplitude))
        .reshape(batch, gridsize**2, n, n)
        .to(device)
    )
    relative = torch.from_numpy(gen.uniform(-4, 4, (batch, gridsize**2, 2)).astype(np.float32)).to(
        device
    )
    return net, scaling, x, relative


def measure(
    n: int, gridsize: int, *, batch: int, device: torch.device, warmup: int, repeats: int
) -> tuple[float, float]:
    """(training, inference) patterns per second for one configuration."""
    net, scaling, x, relative = _setup(n, gridsize, batch, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def train_step() -> None:
        pred = net(x, relative)
        loss = poisson_nll(
            pred.amplitude, x, photon_scale=scaling.photon_scale, mean_photons=scaling.mean_photons
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer() -> None:
        with torch.inference_mode():
            net.predict_object(x)

    patterns = batch * gridsize**2
    train = patterns / _median_seconds(train_step, device=device, warmup=warmup, repeats=repeats)
    net.eval()
    inference = patterns / _median_seconds(infer, device=device, warmup=warmup, repeats=repeats)
    return train, inference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=16, help="samples (groups) per step")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--gridsizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    accel = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(
        f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}; torch {torch.__version__}; accelerator: {accel}"
    )
    print(
        f"batch {args.batch} samples, median of {args.repeats} after {args.warmup} warm-up, float32, Poisson loss, Adam"
    )
    print("| N | gridsize | patterns/step | train patterns/s | inference patterns/s |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        for g in args.gridsizes:
            train, infer = measure(
                n, g, batch=args.batch, device=device, warmup=args.warmup, repeats=args.repeats
            )
            print(f"| {n} | {g} | {args.batch * g * g} | {train:.1f} | {infer:.1f} |", flush=True)


if __name__ == "__main__":
    main()
