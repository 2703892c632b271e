"""Training: the callback that records the run, and ``fit`` (the DataModule is
``datamodule.py``)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from ptycho_spec.lock import Lock, dumps_lock
from ptycho_spec.schema import Canonical, Execution
from ptycho_spec.vocabulary import logged_metrics
from runner.train import effective
from runner.train.bundle import Bundle
from runner.train.datamodule import GroupsDataModule, TrainingSet
from runner.train.module import PtychoModule
from runner.train.trainer import build_trainer, check_monitor


class RunRecorder(pl.Callback):
    """Writes ``effective.toml`` when training starts and keeps the per-epoch history."""

    def __init__(
        self,
        *,
        out_dir: Path,
        execution: Execution,
        c: Canonical,
        found: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.out_dir, self.execution, self.c, self.found = out_dir, execution, c, found
        self.history: list[dict[str, float]] = []
        self.effective: dict[str, dict[str, Any]] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        val = trainer.val_dataloaders if isinstance(trainer.val_dataloaders, DataLoader) else None
        self.effective = effective.record(
            trainer,
            self.execution,
            batch_size=self.c.training.batch_size,
            gradient_clip_val=self.c.training.gradient_clip_val,
            train_loader=trainer.train_dataloader,
            val_loader=val,
            compiled=hasattr(pl_module.net.generator, "_orig_mod"),
        )
        effective.check(self.effective)
        if trainer.is_global_zero:
            effective.write(self.out_dir, {**self.effective, "inputs": self.found})

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        for key in ("train_loss", "val_loss", "lr"):
            if key in trainer.callback_metrics:
                row[key] = float(trainer.callback_metrics[key])
        self.history.append(row)

    # Kept in checkpoints: a resumed run reports the epochs before its interruption too.
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])


def train(
    lock: Lock,
    ts: TrainingSet,
    *,
    found: Mapping[str, Mapping[str, str]],
    out_dir: Path,
    ckpt_path: Path | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> tuple[PtychoModule, list[dict[str, float]], Bundle]:
    """Fit the model described by ``lock`` on ``ts`` (continuing from ``ckpt_path``, a
    checkpoint of this lock, when given); return it, its history and its bundle. ``found``
    (``effective.inputs``) joins the execution settings in ``effective.toml``."""
    c, e = lock.resolved.canonical, lock.resolved.execution
    check_monitor(e, logged_metrics(c.training, c.model, validation=len(ts.val_ids) > 0))
    torch.manual_seed(c.seeds.init)
    module = PtychoModule(
        model=c.model,
        training=c.training,
        probe=torch.from_numpy(ts.scan.probe),
        scaling=ts.scaling,
        centering=ts.centering,
        valid_mask=None if ts.scan.valid_mask is None else torch.from_numpy(ts.scan.valid_mask),
        monitor=e.checkpoint_monitor,
        compile_generator=e.compile,
    )
    recorder = RunRecorder(out_dir=out_dir, execution=e, c=c, found=found)
    trainer = build_trainer(
        execution=e,
        training=c.training,
        out_dir=out_dir,
        run_name=c.run.name,
        extra_callbacks=[recorder, *callbacks],
        lock_digest=lock.header.digest,
    )
    if not len(ts.val_ids):
        # without validation groups the empty validation loader is what the lock asks for
        warnings.filterwarnings("ignore", message=".*`list` across ranks is zero.*")
    pl.seed_everything(c.seeds.loader, workers=True, verbose=False)
    trainer.fit(
        module,
        datamodule=GroupsDataModule(ts, c=c, execution=e),
        ckpt_path=ckpt_path,
        weights_only=True,
    )
    bundle = Bundle(
        state_dict={k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()},
        lock_text=dumps_lock(lock),
        scaling=attrs.asdict(ts.scaling),
        model={"N": c.model.N, "gridsize": c.model.gridsize, "architecture": c.model.architecture},
    )
    return module, recorder.history, bundle
