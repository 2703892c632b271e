"""Shared tiny fixtures of the numerical-core tests (2 CPU cores: everything is small).

* ``make_model(**fields)``: a resolved ``Model`` (N = 64, one pattern per sample, the narrowest
  CNN) with the given fields changed.
* ``tiny_scan``: a simulated lines scan, 96 px object, 8 px raster, 25 patterns, 1e6 photons.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
import torch

from ptycho_spec.schema import Model
from runner.data.scan import Scan
from runner.data.simulate import disk_probe, lines_object, raster_positions, simulate_scan

TINY_MODEL = Model(N=64, gridsize=1, object_big=False, n_filters_scale=1)


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    """The CI machines have 2 cores; more threads only oversubscribe them."""
    torch.set_num_threads(2)


@pytest.fixture
def make_model() -> Callable[..., Model]:
    def make(**fields: Any) -> Model:
        return attrs.evolve(TINY_MODEL, **fields)

    return make


@pytest.fixture(scope="session")
def tiny_scan() -> Scan:
    x, y = raster_positions(96, 64, 8)
    return simulate_scan(
        lines_object(96, seed=5), disk_probe(64), x, y, nphotons=1e6, probe_scale=4.0, noise_seed=0
    )
