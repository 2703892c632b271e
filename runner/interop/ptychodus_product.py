"""ptychodus data in the job: a product plus its diffraction file as a ``Scan``, and the
reconstruction written back as a ptychodus product. h5py only: the job never imports ptychodus.

The files are read and checked by ``ptycho_spec.formats.ptychodus`` (the compiler reads them the
same way for its facts), so the scan the job trains on is the one the lock describes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from ptycho_spec import atomic
from ptycho_spec.formats import ptychodus as pf
from runner.data.scan import Scan

PRODUCT_OUTPUT = "reconstruction.h5"
_REPLACED = (pf.OBJECT, pf.LOSS_EPOCHS, pf.LOSS_VALUES)


def read_scan(
    product_path: str, diffraction_path: str, *, labels: bool
) -> tuple[Scan, pf.ProductFile]:
    """The product's scan in object pixels, amplitudes sqrt(counts), bad pixels masked.

    ``labels``: carry the product's object as ``Scan.object`` (the labels of supervised
    training). Otherwise it stays out: an initial guess is no ground truth to score against.
    """
    product = pf.read_product(product_path, with_object=labels)
    diffraction = pf.read_diffraction(diffraction_path)
    paired = pf.pair(product, diffraction)
    x_px, y_px = pf.object_pixels(product, paired.x_m, paired.y_m)
    bad = diffraction.bad_pixels
    scan = Scan(
        amplitude=pf.counts_to_amplitude(
            diffraction.patterns[paired.rows], bad, path=diffraction.path
        ),
        x_px=x_px,
        y_px=y_px,
        probe=product.probe,
        object=product.object,
        valid_mask=~bad if bad.any() else None,
        source=diffraction.path,
    )
    return scan, product


def loss_values(history: Sequence[Mapping[str, float]]) -> list[tuple[int, float]]:
    """(epoch, training loss) of each epoch of a run's history: ptychodus ``LossValue``s."""
    return [(int(row["epoch"]), float(row["train_loss"])) for row in history if "train_loss" in row]


def write_product(
    target: Path, *, source: str, obj: np.ndarray, losses: Sequence[tuple[int, float]]
) -> None:
    """``source`` with its object replaced by ``obj`` ``(H, W)`` and its losses by ``losses``.

    Metadata, positions, probe and the object's pixel size, centre and layer spacing are copied
    unchanged, so the result is a ptychodus product in the input's frame
    (``ptychodus.api.io.load_product`` reads it). Written to a temporary file renamed into place.
    """
    with (
        atomic.atomic_path(target) as tmp,
        h5py.File(source, "r") as src,
        h5py.File(tmp, "w") as dst,
    ):
        dst.attrs.update(src.attrs)
        for name in src:
            if name not in _REPLACED:
                src.copy(src[name], dst, name=name)
        old = src[pf.OBJECT]
        if obj.shape != old.shape[-2:]:
            msg = f"reconstruction is {obj.shape}, the product's object {old.shape[-2:]}"
            raise ValueError(msg)
        new = dst.create_dataset(pf.OBJECT, data=obj[np.newaxis].astype(old.dtype))
        new.attrs.update(old.attrs)
        dst.create_dataset(pf.LOSS_EPOCHS, data=np.array([e for e, _ in losses], dtype=np.int64))
        dst.create_dataset(pf.LOSS_VALUES, data=np.array([v for _, v in losses], dtype=np.float64))
