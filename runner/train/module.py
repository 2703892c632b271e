"""The LightningModule: PtychoPINN (generator + physics) and its objective.

The objective is ``nll_weight·poisson + mae_weight·mae + realspace_weight·tv`` for
``model_type = "pinn"`` and the amplitude/phase L1 for ``"supervised"``. Train, validation and
test share one step; every term is logged as ``{stage}_{term}`` and the sum as
``{stage}_loss``: the names ``ptycho_spec.vocabulary.logged_metrics`` gives the compiler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from ptycho_spec.schema import Model, Training
from ptycho_spec.vocabulary import LEARNING_RATE, SUPERVISED_TERM, loss_weights
from runner.models.pinn import PtychoPINN
from runner.physics import losses
from runner.physics.scaling import InputCentering, ScalingConstants
from runner.train.optim import build_optimizer, build_scheduler, parameter_groups, warmed_up


class PtychoModule(pl.LightningModule):
    """Trains ``PtychoPINN`` on batches ``{"x": (B,C,N,N), "relative": (B,C,2)[, "object"]}``.

    ``x`` is the measured amplitude in network units (``r·X``); it is both the input and the
    data the physics prediction must explain.
    """

    def __init__(
        self,
        *,
        model: Model,
        training: Training,
        probe: torch.Tensor,
        scaling: ScalingConstants,
        centering: InputCentering | None = None,
        valid_mask: torch.Tensor | None,
        monitor: str,
        compile_generator: bool = False,
    ) -> None:
        super().__init__()
        self.model_cfg, self.training_cfg, self.scaling, self.monitor = (
            model,
            training,
            scaling,
            monitor,
        )
        self.net = PtychoPINN(model=model, probe=probe, scaling=scaling, centering=centering)
        if compile_generator:
            self.net.generator = torch.compile(self.net.generator)
        self.register_buffer("valid_mask", valid_mask, persistent=False)
        self.weights = loss_weights(training)

    def terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each active loss term for one batch (unweighted)."""
        if self.model_cfg.model_type == "supervised":
            pred = self.net.predict_object(batch["x"])
            loss = losses.supervised_l1(pred, batch["object"], mask=self.valid_mask)
            return {SUPERVISED_TERM: loss}
        prediction = self.net(batch["x"], batch["relative"])
        out: dict[str, torch.Tensor] = {}
        if self.weights["poisson"] > 0:
            out["poisson"] = losses.poisson_nll(
                prediction.amplitude,
                batch["x"],
                photon_scale=self.scaling.photon_scale,
                mean_photons=self.scaling.mean_photons,
                mask=self.valid_mask,
            )
        if self.weights["mae"] > 0:
            out["mae"] = losses.amplitude_mae(
                prediction.amplitude, batch["x"], mask=self.valid_mask
            )
        if self.weights["tv"] > 0:
            out["tv"] = losses.total_variation(prediction.object)
        return out

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        terms = self.terms(batch)
        loss = sum(self.weights.get(k, 1.0) * v for k, v in terms.items())
        batch_size = batch["x"].shape[0]
        distributed = self.trainer.world_size > 1
        self.log(
            f"{stage}_loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=distributed,
        )
        for name, value in terms.items():
            self.log(
                f"{stage}_{name}",
                value,
                on_step=False,
                on_epoch=True,
                batch_size=batch_size,
                sync_dist=distributed,
            )
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log(
            LEARNING_RATE,
            lr,
            on_step=False,
            on_epoch=True,
            batch_size=batch["x"].shape[0],
            sync_dist=self.trainer.world_size > 1,
        )
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def optimizer_step(
        self,
        epoch: int,
        batch_idx: int,
        optimizer: Any,
        optimizer_closure: Callable[[], Any] | None = None,
    ) -> None:
        warmup = self.training_cfg.warmup_steps
        with warmed_up(optimizer, step=self.trainer.global_step, warmup_steps=warmup):
            optimizer.step(closure=optimizer_closure)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(parameter_groups(self, self.training_cfg), self.training_cfg)
        steps = max(1, int(self.trainer.estimated_stepping_batches) // self.training_cfg.nepochs)
        scheduler = build_scheduler(
            optimizer, self.training_cfg, monitor=self._plateau_monitor(), steps_per_epoch=steps
        )
        return (
            optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
        )

    def _plateau_monitor(self) -> str:
        return "val_loss" if self.monitor.startswith("val_") else "train_loss"
