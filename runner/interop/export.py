"""``ptycho-spec export-npz``: a run's training or test scan in PtychoPINN's NPZ data contract.

The scan is the one the run itself would read or simulate (``runner.run.prepare.load_scans``),
written by ``runner.data.npz.write_npz``: ``diff3d`` amplitudes (float32), ``xcoords``/``ycoords``
in object pixels, ``probeGuess``, ``objectGuess`` when a ground truth is known, ``scan_index``, and
this project's ``valid_mask`` and ``nphotons`` so a spec on the file resolves the same physics.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs
import numpy as np

from ptycho_spec.errors import UsageError
from ptycho_spec.lock import Lock
from ptycho_spec.schema import Canonical
from runner.data.npz import write_npz
from runner.data.scan import Scan
from runner.run.prepare import load_scans


def export_npz(lock: Lock, paths: Mapping[str, str], path: Path, *, which: str) -> Scan:
    """Write the ``which`` (``train`` or ``test``) scan of ``lock`` (its data files at
    ``paths``, role → file) to ``path``; return it."""
    c = lock.resolved.canonical
    _check_defined(c, which)
    task = "train" if which == "train" else "infer"
    scans = load_scans(attrs.evolve(c, run=attrs.evolve(c.run, task=task)), paths)
    scan = scans.train if which == "train" else scans.test
    write_npz(scan, path, measurement="amplitude", nphotons=_photons(c, scan, which))
    return scan


def _check_defined(c: Canonical, which: str) -> None:
    data = c.data
    missing = {
        "npz": (data.train_file if which == "train" else data.test_file or data.test_fraction)
        is None,
        "simulate": which == "test" and data.simulate.n_test_objects == 0,
    }.get(data.source or "", False)
    if missing:
        msg = f"the run defines no {which} data (data.source = {data.source!r})"
        raise UsageError(msg)


def _photons(c: Canonical, scan: Scan, which: str) -> float | None:
    """Photons per pattern of the exported scan, when known: the simulation's, the counts
    themselves (amplitudes are their square roots), or what the run trained this file with."""
    if c.data.source == "simulate":
        return c.data.simulate.nphotons
    if c.data.measurement == "counts":
        energy = np.square(scan.masked_amplitude(), dtype=np.float64)
        return float(energy.sum(axis=(1, 2)).mean())
    trained = which == "train" and c.run.task != "infer"
    return float(c.training.nphotons) if trained else None
