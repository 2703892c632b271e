"""The Lightning ``Trainer``, its callbacks and its logger, built from ``[execution]`` alone.

Every execution field reaches exactly one consumer here or in ``sampling.loader_kwargs``;
``tests/test_job_execution.py`` enumerates the fields and checks each one arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger

from ptycho_spec.errors import RunError
from ptycho_spec.schema import Execution, Training
from runner.rundir import CHECKPOINT_DIR
from runner.train.checkpoints import AtomicCheckpointIO
from runner.train.resume import LAST, ResumeCheckpoint

LOG_DIR = "logs"


def check_monitor(execution: Execution, logged: Sequence[str]) -> None:
    """A monitored metric the module does not log is an error that lists the logged ones."""
    if execution.checkpoint_monitor not in logged:
        msg = (
            f"execution.checkpoint_monitor = {execution.checkpoint_monitor!r} is not a metric "
            f"this run logs; it logs: {', '.join(logged)}"
        )
        raise RunError(msg)


def build_logger(execution: Execution, *, out_dir: Path, run_name: str) -> Logger | bool:
    """The metrics logger, writing under ``out_dir/logs`` (mlflow: ``out_dir/mlruns``)."""
    match execution.logger:
        case "csv":
            return CSVLogger(save_dir=out_dir, name=LOG_DIR, version="")
        case "tensorboard":
            return TensorBoardLogger(save_dir=out_dir, name=LOG_DIR, version="")
        case "mlflow":
            uri = (out_dir / "mlruns").resolve().as_uri()
            return MLFlowLogger(experiment_name=run_name, tracking_uri=uri)
        case "none":
            return False
    raise AssertionError(execution.logger)


def build_callbacks(execution: Execution, *, out_dir: Path) -> list[Callback]:
    """Checkpointing and early stopping, as ``[execution]`` asks.

    ``last.ckpt`` is ``ResumeCheckpoint``'s, not ``ModelCheckpoint``'s: it is the point
    ``ptycho-spec resume`` continues from, written where a resume is exact (``resume.py``).
    """
    callbacks: list[Callback] = []
    if execution.enable_checkpointing:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out_dir / CHECKPOINT_DIR,
                filename="{epoch}-{step}",
                monitor=execution.checkpoint_monitor,
                mode=execution.checkpoint_mode,
                save_top_k=execution.checkpoint_save_top_k,
                save_last=False,
                every_n_train_steps=execution.checkpoint_every_n_steps,
            )
        )
    if execution.enable_checkpointing and execution.checkpoint_save_last:
        callbacks.append(
            ResumeCheckpoint(
                path=out_dir / CHECKPOINT_DIR / LAST,
                every_n_steps=execution.checkpoint_every_n_steps,
            )
        )
    if execution.early_stop_patience is not None:
        callbacks.append(
            EarlyStopping(
                monitor=execution.checkpoint_monitor,
                mode=execution.checkpoint_mode,
                patience=execution.early_stop_patience,
            )
        )
    return callbacks


def build_trainer(
    *,
    execution: Execution,
    training: Training,
    out_dir: Path,
    run_name: str,
    extra_callbacks: Sequence[Callback] = (),
    lock_digest: str | None = None,
) -> pl.Trainer:
    """A ``Trainer`` whose every setting comes from the lock; its checkpoints carry
    ``lock_digest`` and only a checkpoint carrying it is resumed from."""
    return pl.Trainer(
        accelerator=execution.accelerator,
        devices=execution.devices,
        num_nodes=execution.num_nodes,
        strategy=execution.strategy,
        precision=execution.precision,
        deterministic=execution.deterministic,
        max_epochs=training.nepochs,
        gradient_clip_val=training.gradient_clip_val,
        gradient_clip_algorithm=training.gradient_clip_algorithm,
        accumulate_grad_batches=execution.accumulate_grad_batches,
        enable_progress_bar=execution.enable_progress_bar,
        enable_checkpointing=execution.enable_checkpointing,
        log_every_n_steps=execution.log_every_n_steps,
        logger=build_logger(execution, out_dir=out_dir, run_name=run_name),
        callbacks=[*build_callbacks(execution, out_dir=out_dir), *extra_callbacks],
        default_root_dir=out_dir,
        plugins=[AtomicCheckpointIO(lock_digest=lock_digest)],
        # Our sampler shards by rank itself, so its order is the lock's seed, not Lightning's.
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
