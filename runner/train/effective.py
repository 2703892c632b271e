"""``effective.toml``: what the lock asked for against what actually ran.

Requested values come from ``[execution]``; effective ones are read back from the live
``Trainer``, torch and the DataLoaders. ``[inputs]`` holds, for every task, each data file's
path in the lock and the file the run read. A divergence in a setting that changes results fails
the run: silently training on other hardware or numerics is how the reference backend lost
experiments (devices hard-coded to 1, precision never passed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import tomli_w
import torch
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from torch.utils.data import DataLoader

from ptycho_spec import atomic
from ptycho_spec.errors import RunError
from ptycho_spec.lock import Lock
from ptycho_spec.schema import Execution

# Settings whose effective value changes the numbers a run produces.
RESULT_CHANGING = (
    "accelerator",
    "world_size",
    "precision",
    "deterministic",
    "matmul_precision",
    "accumulate_grad_batches",
    "batch_size",
    "gradient_clip_val",
)


def accelerator_name(trainer: pl.Trainer) -> str:
    """The lock's name of the trainer's accelerator: ``CUDAAccelerator`` → ``"cuda"``."""
    return type(trainer.accelerator).__name__.removesuffix("Accelerator").lower()


def strategy_name(trainer: pl.Trainer) -> str:
    name = type(trainer.strategy).__name__.removesuffix("Strategy").lower()
    if name == "singledevice":
        return "single_device"
    if name == "ddp" and isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        return "ddp_spawn"
    return name


def deterministic_state() -> bool | str:
    if not torch.are_deterministic_algorithms_enabled():
        return False
    return "warn" if torch.is_deterministic_algorithms_warn_only_enabled() else True


def _loader(loader: DataLoader | None) -> dict[str, Any]:
    if loader is None:
        return {}
    return {
        "batch_size": loader.batch_size,
        "num_workers": loader.num_workers,
        "pin_memory": loader.pin_memory,
        "persistent_workers": loader.persistent_workers,
        "prefetch_factor": loader.prefetch_factor if loader.num_workers > 0 else None,
    }


def record(
    trainer: pl.Trainer,
    execution: Execution,
    *,
    batch_size: int,
    gradient_clip_val: float | None,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    compiled: bool,
) -> dict[str, dict[str, Any]]:
    """``{setting: {"requested": ..., "effective": ...}}`` for every execution setting."""
    train = _loader(train_loader)
    pairs: dict[str, tuple[Any, Any]] = {
        "accelerator": (execution.accelerator, accelerator_name(trainer)),
        "devices": (execution.devices, len(trainer.device_ids)),
        "device_ids": (None, list(trainer.device_ids)),
        "num_nodes": (execution.num_nodes, trainer.num_nodes),
        "world_size": (execution.devices * execution.num_nodes, trainer.world_size),
        "strategy": (execution.strategy, strategy_name(trainer)),
        "precision": (execution.precision, str(trainer.precision)),
        "deterministic": (execution.deterministic, deterministic_state()),
        "matmul_precision": (execution.matmul_precision, torch.get_float32_matmul_precision()),
        "compile": (execution.compile, compiled),
        "accumulate_grad_batches": (
            execution.accumulate_grad_batches,
            trainer.accumulate_grad_batches,
        ),
        "gradient_clip_val": (gradient_clip_val, trainer.gradient_clip_val),
        "batch_size": (batch_size, train.get("batch_size")),
        "num_workers": (execution.num_workers, train.get("num_workers")),
        # Pinning only happens when batches go to a CUDA device; on the CPU it is a no-op.
        "pin_memory": (
            execution.pin_memory,
            bool(train.get("pin_memory")) and accelerator_name(trainer) == "cuda",
        ),
        "persistent_workers": (execution.persistent_workers, train.get("persistent_workers")),
        "prefetch_factor": (execution.prefetch_factor, train.get("prefetch_factor")),
        "validation_loader": (val_loader is not None, val_loader is not None),
        "enable_progress_bar": (
            execution.enable_progress_bar,
            trainer.progress_bar_callback is not None,
        ),
        "enable_checkpointing": (
            execution.enable_checkpointing,
            trainer.checkpoint_callback is not None,
        ),
        "logger": (execution.logger, type(trainer.logger).__name__ if trainer.logger else "none"),
        "log_every_n_steps": (execution.log_every_n_steps, trainer.log_every_n_steps),
        "cpu_threads": (execution.cpu_threads, torch.get_num_threads()),
        # the vector kernels torch picked for this CPU (AVX2, AVX512, ...): another set adds in
        # another order, so a replay on such a host agrees only to tolerance
        "cpu_capability": (None, torch.backends.cpu.get_cpu_capability()),
    }
    return {k: {"requested": _none(r), "effective": _none(e)} for k, (r, e) in pairs.items()}


def inputs(lock: Lock, paths: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``{role: {"requested": ..., "effective": ...}}`` for each data file: the path the lock
    records, and the file the run read (where ``ptycho_spec.locate`` found it)."""
    return {i.role: {"requested": i.path, "effective": paths[i.role]} for i in lock.inputs.data}


def write(out_dir: Path, record: Mapping[str, Any]) -> None:
    atomic.write_text(out_dir / "effective.toml", tomli_w.dumps(record))


def _none(value: Any) -> Any:
    return "none" if value is None else value


def check(record: dict[str, dict[str, Any]]) -> None:
    """Fail on any divergence in a result-changing setting, naming each one."""
    diverged = [
        f"{key}: requested {record[key]['requested']!r}, got {record[key]['effective']!r}"
        for key in RESULT_CHANGING
        if record[key]["requested"] != record[key]["effective"]
    ]
    if diverged:
        msg = "the run would not execute as locked: " + "; ".join(diverged)
        raise RunError(msg)
