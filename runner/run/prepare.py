"""From a resolved run to its scans, read or simulated and checked: everything before the
first output.

All data problems surface here, before the run directory is touched, so a bad data file exits
with code 4 and leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs
import numpy as np
from attrs import frozen

from ptycho_spec.data_checks import check_patterns, check_probe, check_spread
from ptycho_spec.errors import DataError
from ptycho_spec.schema import Canonical
from ptycho_spec.vocabulary import split_counts
from runner.data.npz import read_npz
from runner.data.scan import Scan
from runner.data.simulate import simulate_scans
from runner.physics.probe import probe_mask


@frozen(kw_only=True)
class Scans:
    """The run's scans: ``train`` for training tasks, ``test`` for reconstruction.

    ``canvas_shape`` (H, W): the object frame the positions refer to when it is not a ground
    truth's (a ptychodus product's object array), so the reconstruction lands in that frame;
    ``product_file``: that product, for a reconstruction written in its frame.
    """

    train: Scan | None
    test: Scan | None
    canvas_shape: tuple[int, int] | None = None
    product_file: str | None = None


def load_scans(c: Canonical, paths: Mapping[str, str]) -> Scans:
    """Simulate or read the scans a run needs, split when ``test_fraction`` asks for it, and
    check that they mean what this run needs (:func:`check_scans`). ``paths`` (role → file)
    are the lock's data files where they were found (``ptycho_spec.locate``); the paths the
    lock records are never opened."""
    scans = _read_scans(c, paths)
    check_scans(c, scans)
    return scans


def _read_scans(c: Canonical, paths: Mapping[str, str]) -> Scans:
    task = c.run.task
    needs_train, needs_test = task != "infer", task != "train"
    if c.data.source == "simulate":
        train, test = simulate_scans(c, paths)
        return Scans(train=train if needs_train else None, test=test if needs_test else None)
    if c.data.source == "npz":
        return _npz_scans(c, paths, needs_train=needs_train, needs_test=needs_test)
    if c.data.source == "ptychodus":
        return _ptychodus_scans(c, paths, needs_train=needs_train, needs_test=needs_test)
    msg = f"data.source = {c.data.source!r} cannot be loaded by this runner"
    raise DataError(msg)


def _npz_scans(
    c: Canonical, paths: Mapping[str, str], *, needs_train: bool, needs_test: bool
) -> Scans:
    m = c.data.measurement
    if c.data.test_fraction is not None:
        whole = read_npz(paths["train"], measurement=m)
        train, test = split_scan(whole, c.data.test_fraction)
        return Scans(train=train if needs_train else None, test=test if needs_test else None)
    train = read_npz(paths["train"], measurement=m) if needs_train else None
    test = read_npz(paths["test"], measurement=m) if needs_test else None
    return Scans(train=train, test=test)


def _ptychodus_scans(
    c: Canonical, paths: Mapping[str, str], *, needs_train: bool, needs_test: bool
) -> Scans:
    """The product's scan is trained on (self-supervised) and reconstructed, unless
    ``test_fraction`` holds part of it out."""
    from runner.interop.ptychodus_product import read_scan

    supervised = c.model.model_type == "supervised"
    scan, product = read_scan(paths["product"], paths["diffraction"], labels=supervised)
    fraction = c.data.test_fraction
    train, test = (scan, scan) if fraction is None else split_scan(scan, fraction)
    return Scans(
        train=train if needs_train else None,
        test=test if needs_test else None,
        canvas_shape=product.object_shape,
        product_file=paths["product"],
    )


# The keys of patterns and probe in a file of each data source, for messages.
_KEYS: Final = MappingProxyType(
    {"npz": ("diff3d", "probeGuess"), "ptychodus": ("patterns", "probe"), "simulate": (None, None)}
)


def check_scans(c: Canonical, scans: Scans) -> None:
    """``DataError`` (exit 4) before any work, naming file and key, unless each scan has
    patterns measured on good pixels and a probe lit where the model looks: inside the probe
    mask, and, with ``inference.stitch = "probe"``, over the patch centre stitching keeps; with
    ``model.center_input``, training patterns that differ."""
    patterns_key, probe_key = _KEYS.get(c.data.source, (None, None))
    mask = probe_mask(c.model.N).numpy() if c.model.probe_mask else None
    within = "" if mask is None else " inside the probe mask (model.probe_mask = true)"
    for scan in (s for s in (scans.train, scans.test) if s is not None):
        over = "" if scan.valid_mask is None else " on the pixels valid_mask keeps"
        check_patterns(scan.masked_amplitude(), path=scan.source, key=patterns_key, over=over)
        lit = scan.probe if mask is None else scan.probe * mask
        check_probe(lit, path=scan.source, key=probe_key, within=within)
    model_scan = scans.train if scans.train is not None else scans.test
    if scans.test is not None and c.inference.stitch == "probe" and model_scan is not None:
        lit = model_scan.probe if mask is None else model_scan.probe * mask
        n, trim = c.model.N, c.inference.trim
        if not np.abs(lit[trim : n - trim, trim : n - trim]).any():
            msg = (
                f"is dark{within} over the patch centre that inference.trim = {trim} keeps, "
                'by which inference.stitch = "probe" weights every stitched pixel; lower the '
                'trim or stitch by "position"'
            )
            raise DataError(msg, path=model_scan.source, key=probe_key)
    if c.model.center_input and scans.train is not None:
        over = "" if scans.train.valid_mask is None else " on the pixels valid_mask keeps"
        check_spread(
            scans.train.masked_amplitude(), path=scans.train.source, key=patterns_key, over=over
        )


def split_scan(scan: Scan, test_fraction: float) -> tuple[Scan, Scan]:
    """Split by position: the patterns with the largest ``y_px`` become the test scan.

    A contiguous block keeps the test region largely unseen in training, which a random split
    of interleaved, overlapping positions would not.
    """
    order = np.argsort(scan.y_px, kind="stable")
    n_train, n_test = split_counts(len(order), test_fraction)  # the counts the lock recorded
    if n_train == 0 or n_test == 0:
        msg = f"{len(order)} pattern(s) cannot be split into training and test patterns"
        raise DataError(msg, path=scan.source)
    return subset(scan, np.sort(order[:n_train])), subset(scan, np.sort(order[n_train:]))


def subset(scan: Scan, keep: np.ndarray) -> Scan:
    """The patterns ``keep`` of ``scan`` (probe, object and mask shared)."""
    return attrs.evolve(
        scan,
        amplitude=scan.amplitude[keep],
        x_px=scan.x_px[keep],
        y_px=scan.y_px[keep],
        scan_index=scan.scan_index[keep],
    )
