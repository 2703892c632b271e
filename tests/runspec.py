"""Tiny run specs for the job tests: seconds per run on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# Training's per-optimizer and per-scheduler options, none (unused) as a resolved lock has them
# for Adam with a constant learning rate: a test sets those it exercises.
UNUSED_OPTIONS: dict[str, Any] = dict.fromkeys(
    (
        "momentum",
        "plateau_factor",
        "plateau_patience",
        "plateau_min_lr",
        "plateau_threshold",
        "exponential_gamma",
        "warmup_epochs",
        "min_lr_ratio",
        "gradient_clip_algorithm",
    )
)

TINY = """\
spec_version = 1

[run]
task = "{task}"
seed = 3

[data]
source = "simulate"
n_groups = "all"

[data.simulate]
object_size = 80            # (80 - 64)/4 + 1 = 5 → 25 training patterns
scan_step_train = 4
scan_step_test = 8          # 3 × 3 = 9 test patterns
nphotons = 1e6

[model]
N = 64
n_filters_scale = 1
gridsize = {gridsize}

[training]
nepochs = {nepochs}
batch_size = 4
val_fraction = 0.2

[execution]
accelerator = "cpu"
enable_progress_bar = false
log_every_n_steps = 1
{execution}
"""


def write_spec(
    folder: Path,
    *,
    name: str = "tiny",
    task: str = "train+infer",
    gridsize: int = 1,
    nepochs: int = 1,
    execution: str = "",
    extra: str = "",
) -> Path:
    """Write a tiny simulated-data spec to ``folder/name.toml`` and return its path."""
    path = folder / f"{name}.toml"
    text = TINY.format(task=task, gridsize=gridsize, nepochs=nepochs, execution=execution)
    path.write_text(text + extra)
    return path


def write_npz_run(
    folder: Path, *, name: str, diff3d: np.ndarray | None = None, **extra: Any
) -> Path:
    """A 4-pattern NPZ ``folder/name.npz`` (``diff3d`` ones unless given; ``extra`` arrays
    added or replacing the others) and a spec ``folder/name.toml`` that trains on it; returns the spec."""
    data = folder / f"{name}.npz"
    arrays = {
        "diff3d": np.ones((4, 64, 64), np.float32) if diff3d is None else diff3d,
        "xcoords": np.arange(4.0) + 40,
        "ycoords": np.full(4, 40.0),
        "probeGuess": np.ones((64, 64), np.complex64),
    }
    np.savez(data, **(arrays | extra))
    spec = folder / f"{name}.toml"
    spec.write_text(
        f'spec_version = 1\n[data]\nsource = "npz"\ntrain_file = "{data}"\n'
        'test_fraction = 0.5\nn_groups = "all"\n[execution]\naccelerator = "cpu"\n'
    )
    return spec
