"""Optimizers and learning-rate schedules from ``[training]``; each schedule really steps.

Adam and AdamW scale the learning rate of every convolution weight by its fan-in
(``parameter_groups``): Adam moves each coordinate by about the learning rate whatever its
gradient's size, so a convolution whose F inputs are non-negative (ReLU features, diffraction
amplitudes) and whose gradient has one sign over the filter changes its output by about
lr·F·mean(input) per step. At the quickstart's lr = 2e-3 that is about a whole output's worth
for the widest layers (F = 576 to 1,152); compounded over the ~12 layers to a head, the
features grew 8× in one step and the sigmoid/tanh logits reached ±90 within 20 steps (heads
saturated, gradients denormal), 10⁸ within 30 steps at lr = 4e-3, or, at batch 4, the steps ran
negative and killed half the ReLU channels: the flat-object collapses of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ptycho_spec.schema import Training

FAN_IN_REF = 36
"""Fan-in up to which a convolution weight takes the full learning rate; a wider one takes
``FAN_IN_REF / fan-in`` of it, so one Adam step changes every layer's output by at most about
lr·36·mean(input) (7 % at lr = 2e-3 for unit inputs), whatever its width (µP's 1/fan-in
learning rates for Adam, Yang et al. 2021). 36 is a 3 × 3 convolution over 4 channels, the first
layer at gridsize 2. Measured on the quickstart (probe loss after one epoch; a flat object
scores 0.42): 9 gives 0.10-0.11 and 36 0.08-0.10 at batch 4-16 and lr 2e-3-4e-3, 144 saturates
the phase head (logits ±200) at lr = 4e-3, and no scaling collapses at batch 4 or lr 4e-3."""


def lr_scale(conv: torch.nn.Conv2d) -> float:
    """min(1, FAN_IN_REF / F): the factor on the learning rate of the weight of ``conv``, whose
    outputs each read F = C_in·kH·kW inputs."""
    return min(1.0, FAN_IN_REF / conv.weight[0].numel())


def parameter_groups(module: torch.nn.Module, training: Training) -> list[dict[str, Any]]:
    """``module``'s parameters as optimizer groups, one per learning-rate factor (largest
    first, so group 0 runs at ``training.learning_rate``); each group records its
    ``lr_scale``. Convolution weights are scaled by ``lr_scale``; biases, the gain and a
    trainable probe are not. SGD gets one unscaled group: the fan-in argument is about Adam's
    normalized steps."""
    params = list(module.parameters())
    if training.optimizer == "sgd":
        return [{"params": params, "lr_scale": 1.0}]
    scale = {id(m.weight): lr_scale(m) for m in module.modules() if isinstance(m, torch.nn.Conv2d)}
    by_scale: dict[float, list[torch.nn.Parameter]] = {}
    for p in params:
        by_scale.setdefault(scale.get(id(p), 1.0), []).append(p)
    return [
        {"params": ps, "lr": training.learning_rate * s, "lr_scale": s}
        for s, ps in sorted(by_scale.items(), reverse=True)
    ]


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], training: Training
) -> torch.optim.Optimizer:
    """The optimizer of ``[training]`` over ``params``: parameters, or the groups of
    ``parameter_groups`` (each group's own ``lr`` wins over ``training.learning_rate``)."""
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


def warmup_factor(step: int, warmup_steps: int) -> float:
    """LR multiplier of linear warm-up at optimizer step ``step`` (from 0): (step + 1) /
    ``warmup_steps`` during the first ``warmup_steps`` steps, then 1."""
    return 1.0 if step >= warmup_steps else (step + 1) / warmup_steps


@contextmanager
def warmed_up(optimizer: torch.optim.Optimizer, *, step: int, warmup_steps: int) -> Iterator[None]:
    """Every group's learning rate times ``warmup_factor`` for the optimizer step taken inside,
    restored after: the warm-up composes with whatever learning rate the scheduler set.

    ``training.warmup_steps``: Adam's first steps move each weight by about the full learning
    rate before its moment estimates settle; with the full object window at lr 8e-3 the first
    step of the phase decoder lifted the loss 9.5× and left the patches flat, and 10 steps of
    warm-up keep it under 2× (benchmarks/RESULTS.md, "Learning-rate warm-up").
    """
    factor = warmup_factor(step, warmup_steps)
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr * factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up from ~0 to 1, then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
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
                # the floor scales with each group's learning rate, never raising a scaled one
                min_lr=[
                    training.plateau_min_lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups
                ],
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
