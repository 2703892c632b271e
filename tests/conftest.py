"""Shared tiny fixtures of the numerical-core tests (2 CPU cores: everything is small).

* ``make_model(**fields)``: a resolved ``Model`` (N = 64, one pattern per sample, the narrowest
  CNN) with the given fields changed.
* ``tiny_scan``: a simulated lines scan, 96 px object, 8 px raster, 25 patterns, 1e6 photons.

``runner`` (hence torch) is imported inside the fixtures only: the compiler's tests check that
``ptycho_spec`` works without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from ptycho_spec.schema import Model

TINY_MODEL = Model(
    N=64, gridsize=1, object_big=False, n_filters_scale=1, pad_object=True, probe_big=True
)


@pytest.fixture
def make_model() -> Callable[..., Model]:
    def make(**fields: Any) -> Model:
        return attrs.evolve(TINY_MODEL, **fields)

    return make


@pytest.fixture(scope="session")
def tiny_scan() -> Any:
    from runner.data.simulate import disk_probe, lines_object, raster_positions, simulate_scan

    x, y = raster_positions(96, 64, 8)
    return simulate_scan(
        lines_object(96, seed=5), disk_probe(64), x, y, nphotons=1e6, probe_scale=4.0, noise_seed=0
    )
