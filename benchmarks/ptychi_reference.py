"""pty-chi LSQML on a scan in our conventions: the iterative reference of the quality suite.

pty-chi (AdvancedPhotonSource/pty-chi, ``pip install ptychi``; the ``bench`` extra) is used
through its public API only. What has to be translated between the two conventions:

* **Data.** pty-chi takes intensities with the zero frequency at the centre when
  ``data_options.fft_shift`` is on (it shifts them to the corner itself); ours are amplitudes X
  with the zero frequency at (N/2, N/2). So it is given X², shifted by nothing.
* **Probe power.** pty-chi's far field is an unnormalized FFT. The probe is scaled so that a
  unit-amplitude object predicts the data's mean total intensity, N²·Σ|P|² = mean_m Σ_k X²
  (Parseval), the rescaling LSQML would otherwise spend its first epoch on.
* **Positions.** pty-chi's patch at position p (plus the object's position origin) starts at
  pixel p − (N − 1)/2; ours at p − N/2 (the object pixel under patch pixel (N/2, N/2)). With
  the origin pinned at (−½, −½) our positions index pty-chi's object buffer directly, and that
  buffer is our object frame: no resampling on the way in or out.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from attrs import frozen

POSITION_ORIGIN_PX = (-0.5, -0.5)  # (y, x): pty-chi's p − (N−1)/2 equals our p − N/2


@frozen(kw_only=True)
class LsqmlResult:
    """pty-chi's reconstruction in our frame.

    ``object`` ``(H, W)`` complex64 on the canvas the positions refer to; ``probe`` ``(N, N)``
    complex64 in pty-chi's units (unnormalized FFT); ``x_px``, ``y_px`` ``(M,)`` the final
    positions in our convention (changed only when positions were refined); ``wall_s`` the
    time spent in ``task.run()`` plus building the task.
    """

    object: np.ndarray
    probe: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    wall_s: float


def scaled_probe(amplitude: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """``probe (N, N)`` rescaled so N²·Σ|P|² equals the mean total intensity of
    ``amplitude (M, N, N)`` (what a unit-amplitude object would diffract): ``(N, N)`` complex64."""
    n = probe.shape[-1]
    mean_intensity = float(np.mean(np.sum(np.square(amplitude, dtype=np.float64), axis=(1, 2))))
    power = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2)) * n * n
    return (probe * np.sqrt(mean_intensity / power)).astype(np.complex64)


def _options(
    *,
    epochs: int,
    batch_size: int,
    refine_probe: bool,
    refine_positions: bool,
    device: str,
    seed: int,
):
    import ptychi.api as api

    opts = api.LSQMLOptions()
    opts.data_options.fft_shift = True
    opts.object_options.optimizable = True
    opts.object_options.determine_position_origin_coords_by = (
        api.ObjectPosOriginCoordsMethods.SPECIFIED
    )
    opts.object_options.position_origin_coords = np.array(POSITION_ORIGIN_PX)
    opts.probe_options.optimizable = refine_probe
    opts.probe_position_options.optimizable = refine_positions
    opts.reconstructor_options.num_epochs = epochs
    opts.reconstructor_options.batch_size = batch_size
    opts.reconstructor_options.noise_model = api.NoiseModels.GAUSSIAN
    opts.reconstructor_options.rescale_probe_intensity_in_first_epoch = False
    opts.reconstructor_options.random_seed = seed
    opts.reconstructor_options.default_device = (
        api.Devices.GPU if device.startswith("cuda") else api.Devices.CPU
    )
    return opts


def lsqml(
    amplitude: np.ndarray,
    x_px: np.ndarray,
    y_px: np.ndarray,
    probe: np.ndarray,
    canvas_shape: tuple[int, int],
    *,
    epochs: int = 100,
    batch_size: int = 32,
    refine_probe: bool = False,
    refine_positions: bool = False,
    valid_mask: np.ndarray | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> LsqmlResult:
    """Reconstruct with pty-chi LSQML (Gaussian noise model) from a flat object of ones.

    ``amplitude`` ``(M, N, N)``: measured amplitudes, zero frequency at (N/2, N/2);
    ``x_px``, ``y_px`` ``(M,)``: positions in object pixels (the object pixel under patch
    pixel (N/2, N/2)); ``probe`` ``(N, N)`` complex: the initial (or known) probe, any power;
    ``canvas_shape`` (H, W): the object frame of the positions; ``valid_mask`` ``(N, N)`` bool
    or None. pty-chi sets torch's default device and dtype globally; both are restored.
    """
    from ptychi.api.task import PtychographyTask

    options = _options(
        epochs=epochs,
        batch_size=batch_size,
        refine_probe=refine_probe,
        refine_positions=refine_positions,
        device=device,
        seed=seed,
    )
    intensity = np.square(amplitude, dtype=np.float64).astype(np.float32)
    start_probe = scaled_probe(amplitude, probe)
    saved_device, saved_dtype = torch.get_default_device(), torch.get_default_dtype()
    logging.getLogger("ptychi").setLevel(logging.WARNING)
    started = time.perf_counter()
    try:
        task = PtychographyTask(
            options,
            diffraction_data=intensity,
            object_data=np.ones((1, *canvas_shape), np.complex64),
            probe_data=start_probe[None, None],
            probe_position_x_px=np.asarray(x_px, np.float32),
            probe_position_y_px=np.asarray(y_px, np.float32),
            valid_pixel_mask=valid_mask,
        )
        task.run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
        return LsqmlResult(
            object=task.get_data_to_cpu("object", as_numpy=True)[0].astype(np.complex64),
            probe=task.get_data_to_cpu("probe", as_numpy=True)[0, 0].astype(np.complex64),
            x_px=task.get_probe_positions_x(as_numpy=True).astype(np.float64),
            y_px=task.get_probe_positions_y(as_numpy=True).astype(np.float64),
            wall_s=wall,
        )
    finally:
        torch.set_default_device(saved_device)
        torch.set_default_dtype(saved_dtype)
