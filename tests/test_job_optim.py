"""Optimizers and schedules: every configured schedule really changes the learning rate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import pytest
import torch
from runspec import UNUSED_OPTIONS, write_spec

from ptycho_spec.cli import main
from ptycho_spec.schema import Training
from runner.train.optim import (
    FAN_IN_REF,
    build_optimizer,
    build_scheduler,
    parameter_groups,
    warmed_up,
    warmup_cosine,
    warmup_factor,
)

ADAM = Training(
    nll_weight=1.0,
    mae_weight=0.0,
    nphotons=1.0,
    adam_beta1=0.8,
    adam_beta2=0.99,
    warmup_steps=0,
    **UNUSED_OPTIONS,
)


def params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


def lrs(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


class TestBuildOptimizer:
    def test_adam_betas_and_decay(self) -> None:
        """Adam takes β1, β2 and weight decay from [training]."""
        opt = build_optimizer(params(), attrs.evolve(ADAM, weight_decay=0.01))
        assert isinstance(opt, torch.optim.Adam)
        assert opt.defaults["betas"] == (0.8, 0.99) and opt.defaults["weight_decay"] == 0.01

    def test_adamw(self) -> None:
        """adamw is decoupled weight decay."""
        assert isinstance(
            build_optimizer(params(), attrs.evolve(ADAM, optimizer="adamw")), torch.optim.AdamW
        )

    def test_sgd_momentum(self) -> None:
        """SGD takes its momentum."""
        sgd = attrs.evolve(ADAM, optimizer="sgd", momentum=0.7, adam_beta1=None, adam_beta2=None)
        opt = build_optimizer(params(), sgd)
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.7


def convnet() -> torch.nn.Module:
    """Fan-ins 2·9 = 18 and 8·9 = 72, a bias-free 1 × 1 convolution (8) and a scalar."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3), torch.nn.Conv2d(8, 4, 3), torch.nn.Conv2d(4, 1, 1, bias=False)
    )
    net.register_parameter("gain", torch.nn.Parameter(torch.zeros(())))
    return net


class TestParameterGroups:
    def test_conv_weights_scale_by_fan_in(self) -> None:
        """Convolution weights wider than FAN_IN_REF take FAN_IN_REF / fan-in of the learning
        rate; narrower weights, biases and scalars the full rate, in group 0."""
        net = convnet()
        groups = parameter_groups(net, ADAM)
        lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
        assert lr_of[id(net[0].weight)] == lr_of[id(net[2].weight)] == ADAM.learning_rate
        assert lr_of[id(net[1].weight)] == pytest.approx(ADAM.learning_rate * FAN_IN_REF / 72)
        assert lr_of[id(net[1].bias)] == lr_of[id(net.gain)] == ADAM.learning_rate
        assert groups[0]["lr"] == ADAM.learning_rate
        assert sorted(lr_of) == sorted(id(p) for p in net.parameters())

    def test_sgd_is_unscaled(self) -> None:
        """SGD keeps one group at the configured rate."""
        sgd = attrs.evolve(ADAM, optimizer="sgd", momentum=0.7, adam_beta1=None, adam_beta2=None)
        opt = build_optimizer(parameter_groups(convnet(), sgd), sgd)
        assert [g["lr"] for g in opt.param_groups] == [sgd.learning_rate]

    def test_plateau_floor_scales_with_the_group(self) -> None:
        """plateau's min_lr is per group, scaled like its learning rate, so a scaled group is
        never raised to the floor."""
        cfg = attrs.evolve(
            ADAM,
            scheduler="plateau",
            plateau_factor=0.5,
            plateau_patience=0,
            plateau_min_lr=4e-4,
            plateau_threshold=0.0,
        )
        opt = build_optimizer(parameter_groups(convnet(), cfg), cfg)
        sched = build_scheduler(opt, cfg, monitor="val_loss", steps_per_epoch=5)["scheduler"]
        for loss in (1.0, 1.0, 1.0, 1.0):
            opt.step()
            sched.step(loss)
        scale = FAN_IN_REF / 72
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([4e-4, 4e-4 * scale])


class TestSchedules:
    def test_constant_has_no_scheduler(self) -> None:
        """A constant learning rate needs no scheduler."""
        opt = build_optimizer(params(), ADAM)
        assert build_scheduler(opt, ADAM, monitor="val_loss", steps_per_epoch=5) is None

    def test_exponential_steps_per_epoch(self) -> None:
        """exponential multiplies the learning rate by γ once per epoch."""
        cfg = attrs.evolve(ADAM, scheduler="exponential", exponential_gamma=0.5)
        opt = build_optimizer(params(), cfg)
        sched = build_scheduler(opt, cfg, monitor="val_loss", steps_per_epoch=5)
        assert sched["interval"] == "epoch"
        seen = []
        for _ in range(3):
            seen.append(lrs(opt))
            opt.step()
            sched["scheduler"].step()
        assert seen == pytest.approx([1e-3, 5e-4, 2.5e-4])

    def test_plateau_reduces_after_patience(self) -> None:
        """plateau halves the learning rate once the monitored loss stops improving."""
        cfg = attrs.evolve(
            ADAM,
            scheduler="plateau",
            plateau_factor=0.5,
            plateau_patience=1,
            plateau_min_lr=1e-5,
            plateau_threshold=0.0,
        )
        opt = build_optimizer(params(), cfg)
        sched = build_scheduler(opt, cfg, monitor="val_loss", steps_per_epoch=5)
        assert sched["monitor"] == "val_loss"
        seen = []
        for loss in (1.0, 1.0, 1.0, 1.0):
            opt.step()
            sched["scheduler"].step(loss)
            seen.append(lrs(opt))
        assert seen == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])

    def test_warmup_cosine_per_step(self) -> None:
        """warmup_cosine rises linearly over the warm-up steps, then decays to min_lr_ratio."""
        cfg = attrs.evolve(
            ADAM, scheduler="warmup_cosine", warmup_epochs=1, min_lr_ratio=0.1, nepochs=3
        )
        opt = build_optimizer(params(), cfg)
        sched = build_scheduler(opt, cfg, monitor="val_loss", steps_per_epoch=4)
        assert sched["interval"] == "step"
        seen = []
        for _ in range(12):
            seen.append(lrs(opt))
            opt.step()
            sched["scheduler"].step()
        assert seen[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
        assert seen[4] == pytest.approx(1e-3) and seen[-1] < seen[6] < seen[4]
        assert seen[-1] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8))))

    def test_warmup_cosine_formula_ends_at_min_ratio(self) -> None:
        """At the horizon the multiplier is exactly min_lr_ratio."""
        assert warmup_cosine(10, warmup_steps=2, total_steps=10, min_ratio=0.25) == pytest.approx(
            0.25
        )


class TestWarmup:
    def test_factor_rises_linearly_then_holds(self) -> None:
        """(step + 1)/k over the first k steps, then 1; k = 0 is no warm-up."""
        assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
        assert warmup_factor(0, 0) == 1.0

    def test_scales_the_step_and_restores_the_scheduled_rate(self) -> None:
        """Inside ``warmed_up`` every group's rate is scaled (the step really is smaller); after
        it the rate a scheduler set is back, so the two compose."""
        cfg = attrs.evolve(ADAM, optimizer="sgd", momentum=0.0, adam_beta1=None, adam_beta2=None)
        weight = torch.nn.Parameter(torch.zeros(()))
        opt = build_optimizer([weight], cfg)
        moves = []
        for step in range(3):
            before = weight.item()
            weight.grad = torch.ones(())
            with warmed_up(opt, step=step, warmup_steps=2):
                opt.step()
            assert lrs(opt) == 1e-3
            moves.append(before - weight.item())
        assert moves == pytest.approx([5e-4, 1e-3, 1e-3])


class TestSchedulesInARun:
    def test_exponential_changes_the_logged_lr(self, tmp_path: Path) -> None:
        """In a real run the scheduler steps each epoch and the logged learning rate follows."""
        spec = write_spec(tmp_path, task="train", nepochs=3)
        spec.write_text(
            spec.read_text().replace(
                "val_fraction = 0.2",
                'val_fraction = 0.2\nscheduler = "exponential"\nexponential_gamma = 0.5\n'
                "warmup_steps = 0",
            )
        )
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
        history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
        assert [h["lr"] for h in history] == pytest.approx([1e-3, 5e-4, 2.5e-4], rel=1e-6)

    def test_warmup_scales_the_first_steps(self, tmp_path: Path) -> None:
        """Adam's default warm-up (10 steps) in a real run of 5 steps per epoch: the logged
        learning rate is the mean of the rates the steps took, 0.3 and 0.8 of the rate in the
        first two epochs, all of it after."""
        spec = write_spec(tmp_path, task="train", nepochs=3)
        assert main(["run", str(spec), "--out", str(tmp_path / "run")]) == 0
        lock = (tmp_path / "run" / "run.lock.toml").read_text()
        assert "warmup_steps = 10" in lock
        history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
        assert [h["lr"] for h in history] == pytest.approx([3e-4, 8e-4, 1e-3], rel=1e-6)
