"""Optimizers and learning-rate schedules from ``[training]``; each schedule really steps."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ptycho_spec.schema import Training


def build_optimizer(
    params: Iterable[torch.nn.Parameter], training: Training
) -> torch.optim.Optimizer:
    params = list(params)
    if training.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=training.learning_rate,
            momentum=training.momentum,
            weight_decay=training.weight_decay,
        )
    adam = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[training.optimizer]
    return adam(
        params,
        lr=training.learning_rate,
        betas=(training.adam_beta1, training.adam_beta2),
        weight_decay=training.weight_decay,
    )


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    training: Training,
    *,
    monitor: str,
    steps_per_epoch: int,
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` config, or ``None`` for a constant learning rate.

    plateau and exponential step once per epoch; warmup_cosine once per optimizer step, with
    its warm-up and horizon converted from epochs to steps.
    """
    match training.scheduler:
        case "constant":
            return None
        case "plateau":
            scheduler: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=training.plateau_factor,
                patience=training.plateau_patience,
                min_lr=training.plateau_min_lr,
                threshold=training.plateau_threshold,
            )
            return {"scheduler": scheduler, "interval": "epoch", "monitor": monitor, "strict": True}
        case "exponential":
            scheduler = torch.optim.lr_scheduler.ExponentialLR(
                optimizer, gamma=training.exponential_gamma
            )
            return {"scheduler": scheduler, "interval": "epoch"}
        case "warmup_cosine":
            warmup = training.warmup_epochs * steps_per_epoch
            total = training.nepochs * steps_per_epoch

            def factor(step: int) -> float:
                return warmup_cosine(
                    step, warmup_steps=warmup, total_steps=total, min_ratio=training.min_lr_ratio
                )

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            return {"scheduler": scheduler, "interval": "step"}
    raise AssertionError(training.scheduler)
