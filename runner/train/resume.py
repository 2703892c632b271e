"""Resuming an interrupted training run exactly where its last checkpoint left it.

:class:`ResumeCheckpoint` keeps ``checkpoints/last.ckpt`` at points from which a resume
reproduces the uninterrupted run bit for bit. All of them are ends of training batches that
stepped the optimizer, the one point Lightning restarts from completely
(``RESTARTED_ON_TRAIN_BATCH_END``):

* every ``checkpoint_every_n_steps`` optimizer steps;
* the first step of every epoch after the first, so that each finished epoch is kept even
  without ``checkpoint_every_n_steps``. Not the end of an epoch itself: Lightning does not
  replay the epoch-end hooks and schedule steps that follow such a save;
* never the last batch of an epoch, for the same reason (its epoch end follows);
* and when training ends, so that a run killed while reconstructing does not train again.

Lightning saves the model, optimizer, schedulers, loop progress, callbacks and the train
loader's ``state_dict`` (``ResumableLoader``: the epoch and the batches consumed). This
callback adds what it does not save: the RNG states, the running sums behind the epoch means
logged so far (without them a resumed epoch would report the mean of its remaining batches
only), whether early stopping ended training, and the CSV logger's rows so far: Lightning
deletes ``logs/metrics.csv`` when a logger starts in a directory that holds one, so a resumed
run logs those rows again before its own. A per-step row logged right after the checkpoint's
step is not in it (Lightning logs a batch's step metrics after its ``on_train_batch_end``).

Restoring the epoch sums and restarting the train loader touch private loop state
(``fit_loop._combined_loader``, ``epoch_loop._results``); ``pyproject.toml`` bounds
``lightning`` to the versions this is tested with for that reason.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any, Final

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from ptycho_spec.errors import UsageError
from runner import rundir
from runner.train.sampling import ResumableLoader

LAST = "last.ckpt"
RESUME_KEY: Final = "ptycho_spec_resume"  # checkpoint entry holding this callback's state


class ResumeCheckpoint(pl.Callback):
    """Writes ``path`` (``checkpoints/last.ckpt``) at the resume points of the module doc."""

    def __init__(self, *, path: Path, every_n_steps: int | None) -> None:
        self.path, self.every_n_steps = path, every_n_steps
        self._saved_step: int | None = None
        self._resuming = False
        self._pending_sums: dict[str, dict[str, torch.Tensor]] = {}
        self._csv_log = ""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The loop's own count: workers and Lightning's fetcher prefetch ahead of it.
        if isinstance(trainer.train_dataloader, ResumableLoader):
            trainer.train_dataloader.consumed = batch_idx + 1

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._pending_sums:
            _add_epoch_sums(trainer, self._pending_sums)
            self._pending_sums = {}
        if self._resume_point(trainer, batch_idx):
            self._save(trainer)

    def _resume_point(self, trainer: pl.Trainer, batch_idx: int) -> bool:
        accumulate = trainer.accumulate_grad_batches
        if (batch_idx + 1) % accumulate or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return False  # mid-accumulation (gradients are not saved), or the epoch end follows
        first_step = batch_idx + 1 == accumulate and trainer.current_epoch > 0
        n = self.every_n_steps
        return first_step or bool(n and trainer.global_step % n == 0)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step != self._saved_step:
            self._saved_step = trainer.global_step
            trainer.save_checkpoint(self.path)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RESUME_KEY] = {
            "rng": rng_state(),
            "epoch_sums": _epoch_sums(trainer),
            "should_stop": bool(trainer.should_stop),
            "csv_log": _csv_log(trainer),
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(RESUME_KEY)
        if state is None:
            return
        set_rng_state(state["rng"])
        self._pending_sums = dict(state["epoch_sums"])
        trainer.should_stop = state["should_stop"]
        self._csv_log = state.get("csv_log", "")
        self._saved_step = int(checkpoint["global_step"])
        self._resuming = True
        _forget_train_loader(trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._resuming:
            _forget_train_loader(trainer)
            _replay_csv_log(trainer, self._csv_log)


def _csv_log(trainer: pl.Trainer) -> str:
    """The text of the CSV logger's ``metrics.csv`` so far, flushed first ("" without one)."""
    logger = trainer.logger
    if not isinstance(logger, CSVLogger) or not trainer.is_global_zero:
        return ""
    logger.save()
    path = Path(logger.log_dir) / "metrics.csv"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _replay_csv_log(trainer: pl.Trainer, text: str) -> None:
    """Log the rows of ``text`` (a ``metrics.csv``) again, in order, through the logger."""
    logger = trainer.logger
    if not text or not isinstance(logger, CSVLogger):
        return
    for row in csv.DictReader(io.StringIO(text)):
        step = int(row.pop("step"))
        logger.log_metrics({k: _number(v) for k, v in row.items() if v}, step=step)
    logger.save()


def _number(text: str) -> int | float:
    """A CSV cell as Lightning wrote it: ``str`` of an int (the epoch) or of a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _forget_train_loader(trainer: pl.Trainer) -> None:
    """Make the fit loop build the train loader again once the loops are restored.

    ``estimated_stepping_batches`` (configure_optimizers) builds and starts the loader when the
    strategy is set up, before the loop state is restored (after this callback's, or before it
    for strategies that restore after setup: hence both hooks), and the loop then neither
    rebuilds it nor loads its position into it.
    """
    trainer.fit_loop._combined_loader = None


def _epoch_sums(trainer: pl.Trainer) -> dict[str, dict[str, torch.Tensor]]:
    """Running sums of the batch-size-weighted means logged so far this epoch.

    Lightning keeps them (``_ResultMetric.value`` and ``cumulated_batch_size``) in memory only.
    """
    results = trainer.fit_loop.epoch_loop._results
    return {
        key: {
            "value": m.value.detach().cpu().clone(),
            "count": m.cumulated_batch_size.cpu().clone(),
        }
        for key, m in results.items()
        if m.is_tensor and m.meta.on_epoch and m.meta.is_mean_reduction
    }


def _add_epoch_sums(trainer: pl.Trainer, sums: dict[str, dict[str, torch.Tensor]]) -> None:
    """Add the sums saved before the interruption to those of the first resumed batch.

    For that batch the uninterrupted run adds ``saved + x·b``; the resumed run holds ``0 + x·b``
    (exactly ``x·b``) when this is called, and float addition is commutative, so the sums, and
    the epoch means, agree bit for bit from here on.
    """
    results = trainer.fit_loop.epoch_loop._results
    for key, saved in sums.items():
        metric = results.get(key)
        if metric is not None:
            metric.value = saved["value"].to(metric.value.device) + metric.value
            count = metric.cumulated_batch_size
            metric.cumulated_batch_size = saved["count"].to(count.device) + count


def rng_state() -> dict[str, Any]:
    """torch (CPU and initialized CUDA devices), numpy and Python RNG states, as tensors and
    plain values (what ``torch.load(weights_only=True)`` reads back)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_checkpoint(out_dir: Path, *, task: str) -> Path:
    """The checkpoint to resume ``out_dir`` from; ``UsageError`` (exit 2) when there is none,
    ``RunError`` while a live process still holds the directory."""
    if rank_zero_only.rank == 0:  # under DDP, the other ranks start beside rank 0's claim
        rundir.check_free(out_dir)
    if rundir.is_complete(out_dir):
        msg = f"{out_dir}: the run is complete; nothing to resume"
        raise UsageError(msg)
    if task == "infer":
        msg = f"{out_dir}: an inference run has no training to resume; run its lock again"
        raise UsageError(msg)
    path = out_dir / rundir.CHECKPOINT_DIR / LAST
    if not path.is_file():
        msg = (
            f"{out_dir}: no {rundir.CHECKPOINT_DIR}/{LAST} to resume from (the run stopped before "
            "its first checkpoint, or execution.checkpoint_save_last is false); run the lock again"
        )
        raise UsageError(msg)
    return path
