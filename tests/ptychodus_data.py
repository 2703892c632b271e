"""Simulated ptychodus data for the interop tests, written with h5py in ptychodus 1.7.0's layout
(``api/io.py`` ``save_product``, ``save_diffraction_data``) so no test here needs ptychodus.

Positions in metres follow ptychodus's geometry (``api/object.py``): our object pixel x_px is
ptychodus's plus ½ (``ptycho_spec.formats.ptychodus``), so x_m = (x_px − ½ − (W − 1)/2)·dx + c.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
from attrs import frozen

PIXEL_M = 1e-8  # 10 nm object pixels
CENTER_M = (3e-6, -2e-6)  # an object centre away from the origin: the mapping must use it
METADATA = {
    "name": "simulated",
    "comments": "",
    "detector_object_distance_m": 2.0,
    "photon_energy_eV": 10000.0,
    "probe_photon_count": 0.0,
    "exposure_time_s": 0.0,
    "mass_attenuation_m2_per_kg": 0.0,
    "tomography_angle_deg": 0.0,
    "focus_object_distance_m": 0.0,
    "tilt_angle_deg": 0.0,
    "far_field": True,
}


@frozen(kw_only=True)
class Simulated:
    """Files of one simulated scan: the product, the diffraction file and what they hold."""

    product: Path
    diffraction: Path
    counts: np.ndarray  # (M, N, N) int32 detector counts
    index: np.ndarray  # (M,) scan indexes
    x_m: np.ndarray
    y_m: np.ndarray
    truth: np.ndarray  # (H, W) complex64 ground truth (not in the files)


def to_metres(px: np.ndarray, size: int, center_m: float, pixel_m: float = PIXEL_M) -> np.ndarray:
    return (px - 0.5 - (size - 1) / 2) * pixel_m + center_m


def counts_of(amplitude: np.ndarray, nphotons: float) -> np.ndarray:
    """Integer detector counts whose square roots are ``amplitude`` up to one scale, with
    ``nphotons`` mean photons per pattern."""
    energy = np.square(amplitude, dtype=np.float64)
    scale = nphotons / energy.sum(axis=(1, 2)).mean()
    return np.rint(energy * scale).astype(np.int32)


def write_product(
    path: Path,
    *,
    probe: np.ndarray,
    index: np.ndarray,
    x_m: np.ndarray,
    y_m: np.ndarray,
    obj: np.ndarray,
    pixel_m: tuple[float, float] = (PIXEL_M, PIXEL_M),
    probe_pixel_m: tuple[float, float] | None = None,
    center_m: tuple[float, float] = CENTER_M,
    **attributes: Any,
) -> Path:
    """A product file as ``ptychodus.api.io.save_product`` writes it."""
    with h5py.File(path, "w") as h5:
        h5.attrs.update({**METADATA, **attributes})
        h5["probe_position_indexes"] = index
        h5["probe_position_x_m"] = x_m
        h5["probe_position_y_m"] = y_m
        # (OPR modes, incoherent modes, H, W) as ptychodus stores probes
        probe_ds = h5.create_dataset("probe", data=probe.reshape(1, -1, *probe.shape[-2:]))
        width, height = probe_pixel_m or pixel_m
        probe_ds.attrs.update(pixel_width_m=width, pixel_height_m=height)
        object_ds = h5.create_dataset("object", data=obj if obj.ndim == 3 else obj[np.newaxis])
        object_ds.attrs.update(
            center_x_m=center_m[0],
            center_y_m=center_m[1],
            pixel_width_m=pixel_m[0],
            pixel_height_m=pixel_m[1],
        )
        h5["object_layer_spacing_m"] = np.zeros(len(object_ds) - 1)
        h5["loss_epochs"] = np.zeros(0, dtype=np.int64)
        h5["loss_values"] = np.zeros(0)
    return path


def write_diffraction(
    path: Path,
    counts: np.ndarray,
    *,
    index: np.ndarray | None = None,
    bad: np.ndarray | None = None,
) -> Path:
    """A diffraction file as ``save_diffraction_data`` writes it (HDF5), or an NPZ for ``.npz``."""
    arrays = {"patterns": counts}
    if index is not None:
        arrays["indexes"] = index
    if bad is not None:
        arrays["bad_pixels"] = bad
    if path.suffix == ".npz":
        np.savez(path, **arrays)
        return path
    with h5py.File(path, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value)
        h5["patterns"].attrs.update(detector_pixel_width_m=75e-6, detector_pixel_height_m=75e-6)
    return path


def simulated_files(
    folder: Path,
    scan: Any,
    *,
    nphotons: float = 1e6,
    bad: np.ndarray | None = None,
    suffix: str = ".h5",
) -> Simulated:
    """``scan`` (a simulated ``Scan`` with its ground truth) as a product with a flat object
    guess in the truth's frame, plus a diffraction file of integer counts."""
    height, width = scan.object.shape
    index = np.arange(len(scan), dtype=np.int64) + 100  # scan indexes need not start at 0
    x_m = to_metres(scan.x_px, width, CENTER_M[0])
    y_m = to_metres(scan.y_px, height, CENTER_M[1])
    counts = counts_of(scan.amplitude, nphotons)
    product = write_product(
        folder / "product.h5",
        probe=scan.probe,
        index=index,
        x_m=x_m,
        y_m=y_m,
        obj=np.ones((height, width), np.complex64),
    )
    diffraction = write_diffraction(folder / f"diffraction{suffix}", counts, index=index, bad=bad)
    return Simulated(
        product=product,
        diffraction=diffraction,
        counts=counts,
        index=index,
        x_m=x_m,
        y_m=y_m,
        truth=scan.object,
    )


SPEC = """\
spec_version = 1

[run]
task = "{task}"
seed = 3

[data]
source = "ptychodus"
n_groups = "all"
{data}
[data.ptychodus]
product_file = "{product}"
diffraction_file = "{diffraction}"

[model]
n_filters_scale = 1

[training]
nepochs = {nepochs}
batch_size = 8

[execution]
accelerator = "cpu"
enable_progress_bar = false
log_every_n_steps = 1
"""


def write_spec(
    folder: Path, sim: Simulated, *, task: str = "train+infer", nepochs: int = 1, data: str = ""
) -> Path:
    path = folder / "ptychodus.toml"
    text = SPEC.format(
        task=task, nepochs=nepochs, data=data, product=sim.product, diffraction=sim.diffraction
    )
    path.write_text(text)
    return path
