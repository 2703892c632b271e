"""Simulated scans: the PtychoPINN "lines" object, the disk probe, raster scans, Poisson noise.

Diffraction is computed by the model's own physics functions (``runner/physics``), so a known
object and probe reproduce the simulated noiseless patterns exactly. Stored amplitudes are in
the model's units: X = sqrt(K)/s with K ~ Poisson(s²·|F(O·P̂)|²) and s chosen so that the mean
expected photons per pattern is ``nphotons`` (``ptycho/diffsim.py`` ``illuminate_and_diffract``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch

from ptycho_spec.errors import DataError
from ptycho_spec.schema import Canonical
from runner.data.npz import read_probe
from runner.data.scan import Scan
from runner.physics.kernels import gaussian_filter, scipy_radius
from runner.physics.probe import normalize_probe
from runner.physics.propagate import amplitude, far_field, illuminate
from runner.physics.shift import crop_patches

N_LINES = 400  # ``ptycho/diffsim.py`` ``sim_object_image``: 400 lines on a 2·392 px canvas
REFERENCE_SIZE = 392  # ``GridLinesConfig.size``: the object side the line count was chosen for
DISK_PROBE_SCALE = 0.7  # ``ptycho/params.py`` default_probe_scale: disk radius ≈ 0.17·N
SIMULATION_CHUNK = 512  # patterns per batch of the forward physics (≤ 150 MiB at N = 128)


def _line_pixels(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bresenham rasterization of segments ``ends (L, 4)`` = (r0, c0, r1, c1) int → rows, cols.

    The pixel set of ``skimage.draw.line`` (which the reference uses), vectorized over all
    segments: along the major axis k = 0 … L, the minor offset is ⌊(2·l·k + L) / (2·L)⌋
    (l, L the minor and major extents), i.e. l·k/L rounded half up, in exact integers.
    """
    r0, c0, r1, c1 = ends.T.astype(np.int64)
    dr, dc = np.abs(r1 - r0), np.abs(c1 - c0)
    major, minor = np.maximum(dr, dc), np.minimum(dr, dc)
    owner = np.repeat(np.arange(len(ends)), major + 1)
    k = np.arange(len(owner)) - (np.cumsum(major + 1) - (major + 1))[owner]
    offset = (2 * minor[owner] * k + major[owner]) // np.maximum(2 * major[owner], 1)
    steep = (dr > dc)[owner]
    along_r, along_c = np.where(steep, k, offset), np.where(steep, offset, k)
    return r0[owner] + np.sign(r1 - r0)[owner] * along_r, c0[owner] + np.sign(c1 - c0)[
        owner
    ] * along_c


def lines_object(size: int, *, seed: int) -> np.ndarray:
    """The "lines" test object: ``(size, size)`` complex64.

    ``ptycho/diffsim.py``: one-pixel lines with uniform random end points on a 2·size canvas,
    400 of them at the reference size of 392 px and proportionally to the area otherwise, so
    every size has the reference's line density (400 lines on a small canvas would blur into a
    nearly flat, low-contrast object); amplitude A = G₁ + 2·G₅ + 5·G₁₀ of the line image (G_σ a Gaussian blur, scipy's
    reflect borders); the central size × size crop; phase φ = π·tanh((A − max A/2)/(3·mean A))
    (``dummy_phi``, scale free). The amplitude is divided by its maximum, so it lies in (0, 1]
    and a sigmoid head can represent it (the reference divides patches by the mean patch
    maximum, ``norm_Y_I``; metrics rescale amplitude to the truth's mean either way).
    """
    big = 2 * size
    rng = np.random.default_rng(seed)
    n_lines = max(1, round(N_LINES * (size / REFERENCE_SIZE) ** 2))
    ends = (big * rng.random((n_lines, 4))).astype(np.int64)
    lines = np.zeros((big, big))
    lines[_line_pixels(ends)] = 1.0
    amp = sum(
        w * gaussian_filter(lines, s, radius=scipy_radius(s), mode="symmetric")
        for w, s in ((1, 1), (2, 5), (5, 10))
    )
    amp = amp[size // 2 : size // 2 + size, size // 2 : size // 2 + size]
    phase = math.pi * np.tanh((amp - amp.max() / 2) / (3 * amp.mean()))
    return ((amp / amp.max()) * np.exp(1j * phase)).astype(np.complex64)


def disk_probe(N: int) -> np.ndarray:
    """The ideal disk probe ``(N, N)`` complex64 (``ptycho/probe.py`` ``get_default_probe``).

    A symmetric Gaussian window of σ = N/(0.7·π²) about (N − 1)/2, its outer product
    thresholded at ½ (a disk of radius ≈ 0.17·N), blurred by σ = 1 px, plus 1e-9; real valued.
    """
    t = np.arange(N) - (N - 1) / 2
    window = np.exp(-0.5 * (t / (N / (DISK_PROBE_SCALE * math.pi**2))) ** 2)
    disk = (np.outer(window, window) > 0.5).astype(np.float64)
    return (gaussian_filter(disk, 1.0, radius=scipy_radius(1.0), mode="symmetric") + 1e-9).astype(
        np.complex64
    )


def raster_positions(object_size: int, N: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Raster scan whose N × N windows lie inside the object ("VALID"): ``(M,)`` float64 each.

    Window corners 0, step, … ≤ object_size − N along both axes, rows outer; positions are the
    window corners + N/2 (``runner/physics/shift.py`` position convention).
    """
    corners = np.arange(0, object_size - N + 1, step, dtype=np.float64)
    if len(corners) == 0:
        msg = f"an object of {object_size} px holds no {N} px window"
        raise ValueError(msg)
    yy, xx = np.meshgrid(corners + N / 2, corners + N / 2, indexing="ij")
    return xx.ravel(), yy.ravel()


def noiseless_amplitude(
    obj: np.ndarray, probe: np.ndarray, x_px: np.ndarray, y_px: np.ndarray, *, probe_scale: float
) -> torch.Tensor:
    """|F(O·P̂)| at each position: the model's forward physics, ``(M, N, N)`` float64.

    Computed in chunks of ``SIMULATION_CHUNK`` patterns to bound the complex128 intermediates.
    """
    n = probe.shape[-1]
    probe_hat = normalize_probe(torch.as_tensor(probe, dtype=torch.complex128), probe_scale)
    obj_t = torch.as_tensor(obj, dtype=torch.complex128)
    x_t, y_t = torch.as_tensor(x_px), torch.as_tensor(y_px)
    chunks = [
        amplitude(
            far_field(
                illuminate(
                    crop_patches(
                        obj_t, x_t[i : i + SIMULATION_CHUNK], y_t[i : i + SIMULATION_CHUNK], n
                    ),
                    probe_hat,
                )
            )
        )
        for i in range(0, len(x_t), SIMULATION_CHUNK)
    ]
    return torch.cat(chunks)


def simulate_scan(
    obj: np.ndarray,
    probe: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    *,
    nphotons: float,
    probe_scale: float,
    noise_seed: int,
    scan_index: np.ndarray | None = None,
    source: str = "simulated",
) -> Scan:
    """Poisson-noisy diffraction of ``obj (H, W)`` under ``probe (N, N)`` at ``x_px, y_px (M,)``.

    s = sqrt(nphotons / mean_m Σ|F(O·P̂)|²), K ~ Poisson(s²·|F(O·P̂)|²) drawn from
    ``torch.Generator(noise_seed)``, stored X = sqrt(K)/s (float32). ``probe`` is stored raw.
    """
    intensity = noiseless_amplitude(obj, probe, x_px, y_px, probe_scale=probe_scale) ** 2
    s2 = nphotons / float(intensity.sum(dim=(-2, -1)).mean())
    counts = torch.poisson(s2 * intensity, generator=torch.Generator().manual_seed(noise_seed))
    return Scan(
        amplitude=torch.sqrt(counts / s2).numpy().astype(np.float32),
        x_px=np.asarray(x_px, np.float64),
        y_px=np.asarray(y_px, np.float64),
        probe=np.asarray(probe, np.complex64),
        object=np.asarray(obj, np.complex64),
        scan_index=np.zeros(len(x_px), np.int64) if scan_index is None else scan_index,
        source=source,
    )


def _derived_seeds(seed: int, count: int) -> list[int]:
    """``count`` independent 32-bit seeds from one seed (numpy ``SeedSequence``)."""
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(count)]


def _split(canonical: Canonical, split: Literal["train", "test"]) -> tuple[int, int, int, int]:
    """(objects, object seed, raster step, noise seed) of the training or the test scan."""
    sim, seeds = canonical.data.simulate, canonical.seeds
    if split == "train":
        return sim.n_train_objects, seeds.simulate_train, sim.scan_step_train, seeds.noise
    return (
        sim.n_test_objects,
        seeds.simulate_test,
        sim.scan_step_test,
        _derived_seeds(seeds.noise, 2)[1],
    )


def _tiled_scan(canonical: Canonical, probe: np.ndarray, split: Literal["train", "test"]) -> Scan:
    """The split's lines objects side by side along x on one canvas, each raster-scanned inside
    its own tile (no window straddles two objects); ``scan_index`` = tile number."""
    n_objects, object_seed, step, noise_seed = _split(canonical, split)
    size, n = canonical.data.simulate.object_size, int(canonical.model.N)
    canvas = np.concatenate(
        [lines_object(size, seed=s) for s in _derived_seeds(object_seed, n_objects)], axis=1
    )
    x0, y0 = raster_positions(size, n, step)
    tile = np.repeat(np.arange(n_objects), len(x0))
    return simulate_scan(
        canvas,
        probe,
        np.tile(x0, n_objects) + size * tile,
        np.tile(y0, n_objects),
        nphotons=canonical.data.simulate.nphotons,
        probe_scale=canonical.model.probe_scale,
        noise_seed=noise_seed,
        scan_index=tile.astype(np.int64),
        source=f"simulated {split}: {n_objects} lines object(s) of {size} px, step {step} px",
    )


def simulate_scans(
    canonical: Canonical, paths: Mapping[str, str] = MappingProxyType({})
) -> tuple[Scan, Scan | None]:
    """The training scan and the test scan (None when ``n_test_objects`` is 0) of a resolved run.

    Objects: ``seeds.simulate_train`` and ``seeds.simulate_test`` (independent objects);
    noise: ``seeds.noise`` for training and a seed derived from it for testing. The probe is
    ``disk_probe(N)`` or ``probeGuess`` of the NPZ named by ``data.simulate.probe``, read where
    it was found (``paths["probe"]``).
    """
    sim, n = canonical.data.simulate, int(canonical.model.N)
    probe = disk_probe(n) if sim.probe == "disk" else read_probe(paths["probe"])
    if probe.shape != (n, n):
        msg = f"is {probe.shape[0]}×{probe.shape[1]}, model.N is {n}"
        raise DataError(msg, path=paths["probe"], key="probeGuess")
    train = _tiled_scan(canonical, probe, "train")
    return train, (_tiled_scan(canonical, probe, "test") if sim.n_test_objects else None)
