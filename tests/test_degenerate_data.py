"""Degenerate but well-formed data through ``ptycho-spec compile`` and a one-epoch ``run``:
refused up front (exit 2 or 4, one line each, no run directory), or a completed run; never a
traceback or a late exit 1.

The scans are NPZ files in the data contract, 1 to 6 patterns of 64 × 64, with a zero, tiny,
border-only or NaN probe; zero, half-zero, constant or NaN patterns; constant, duplicated,
outlying, nanometre, metre, negative, offset or NaN positions; gridsize 2 with too few
neighbours; validation splits and monitors near their limits (``strategies.degenerate_runs``).
``PTYCHO_EXAMPLES`` makes a longer session.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from strategies import (
    degenerate_patterns,
    degenerate_positions,
    degenerate_probe,
    degenerate_runs,
    toml,
)
from test_fuzz import DIAGNOSTIC, cli

pytestmark = pytest.mark.slow

# Most drawn scans are refused at compile time in milliseconds; the few that run take seconds.
DEGENERATE = settings(
    max_examples=int(os.environ.get("PTYCHO_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _case(
    m: int = 4,
    *,
    probe: str = "flat",
    patterns: str = "poisson",
    positions: str = "line",
    **spec: Any,
) -> dict[str, Any]:
    """A hand-made case in the shape ``degenerate_runs`` draws."""
    x, y = degenerate_positions(positions, m)
    arrays = {
        "diff3d": degenerate_patterns(patterns, m, counts=False),
        "xcoords": x,
        "ycoords": y,
        "probeGuess": degenerate_probe(probe),
    }
    tree = {
        "run": {"task": "train"},
        "data": {"source": "npz", "train_file": "scan.npz", "n_groups": "all"},
        "model": {"n_filters_scale": 1},
        "training": {"nepochs": 1, "batch_size": 2},
        "execution": {"accelerator": "cpu", "enable_progress_bar": False, "logger": "none"},
    }
    for table, values in spec.items():
        tree[table] = {**tree.get(table, {}), **values}
    return {"arrays": arrays, "spec": tree}


def _assert_refused(code: int, err: str) -> None:
    assert code in (2, 4), err
    assert err.strip(), "a refusal must say why"
    for line in err.splitlines():
        assert DIAGNOSTIC.match(line), f"not a one-line diagnostic: {line!r}\n{err}"


@DEGENERATE
@given(degenerate_runs())
@example(_case(probe="zero"))  # a traceback before these checks
@example(_case(positions="outlier"))  # terabytes asked of the stitcher
@example(
    _case(m=2, positions="negative", run={"task": "train+infer"}, data={"test_file": "scan.npz"})
)  # every patch before pixel 0: a stitching canvas of negative width
@example(_case(m=2))  # the default val_loss monitor with no group held out: a late exit 1
@example(_case(m=5, model={"gridsize": 2}))  # too few neighbours, found after the claim
@example(
    _case(
        m=4,
        patterns="zero in the first half",
        run={"task": "train+infer"},
        data={"test_fraction": 0.5},
    )
)  # training patterns all zero once the file is split
@example(_case(patterns="constant"))  # no spread for model.center_input to scale by
def test_degenerate_data_is_refused_or_runs(case: dict[str, Any]) -> None:
    """Compile, then run the lock: each step exits 0, or 2/4 with one-line diagnostics and
    before the run directory exists; a run that exits 0 is complete."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.savez(folder / "scan.npz", **case["arrays"])
        (folder / "spec.toml").write_text(toml(case["spec"]), encoding="utf-8")
        lock, out = folder / "spec.lock.toml", folder / "run"
        code, err = cli("compile", str(folder / "spec.toml"), "-o", str(lock))
        if code != 0:
            _assert_refused(code, err)
            return
        code, err = cli("run", str(lock), "--out", str(out))
        if code != 0:
            _assert_refused(code, err)
            assert not out.exists(), f"refused after claiming the run directory: {err}"
            return
        assert (out / "COMPLETE").is_file() and "Traceback" not in err, err


def test_identical_patterns_name_center_input(tmp_path: Path) -> None:
    """Training patterns that are all the same give the centred generator input nothing to
    scale by: exit 4 before the run directory, naming the key that can be turned off; with it
    off the same data trains."""
    case = _case(patterns="constant")
    np.savez(tmp_path / "scan.npz", **case["arrays"])
    for center, expected in ((True, 4), (False, 0)):
        spec = {**case["spec"], "model": {**case["spec"]["model"], "center_input": center}}
        (tmp_path / "spec.toml").write_text(toml(spec), encoding="utf-8")
        out = tmp_path / f"run-{center}"
        code, err = cli("run", str(tmp_path / "spec.toml"), "--out", str(out))
        assert code == expected, err
        if center:
            _assert_refused(code, err)
            assert "model.center_input = false" in err and not out.exists()
