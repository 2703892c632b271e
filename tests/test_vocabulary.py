"""Tests for ptycho_spec.vocabulary: the names compiler and runner share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, get_args

import attrs
import torch

from ptycho_spec.schema import Model, Optimizer, Scheduler, Training
from ptycho_spec.vocabulary import (
    OPTIMIZER_PARAMS,
    SCHEDULER_PARAMS,
    auto_weight,
    has_validation,
    logged_metrics,
    loss_terms,
    loss_weights,
    validation_groups,
)

TRAINING = Training(nll_weight=1.0, mae_weight=0.0)
MODEL = Model(N=64)


class TestAutoWeight:
    def test_the_chosen_data_term(self) -> None:
        """An "auto" weight is 1 for the term training.loss names, else 0."""
        assert auto_weight("nll_weight", "poisson") == 1.0
        assert auto_weight("mae_weight", "poisson") == 0.0
        assert auto_weight("mae_weight", "mae") == 1.0


class TestLossWeights:
    def test_by_logged_name(self) -> None:
        """Weights are keyed by the name each term is logged under; "auto" as it resolves."""
        training = Training(loss="mae", realspace_weight=0.5)
        assert loss_weights(training) == {"poisson": 0.0, "mae": 1.0, "tv": 0.5}


class TestLossTerms:
    def test_weighted_terms(self) -> None:
        """Only terms weighted above 0 are optimized."""
        assert loss_terms(attrs.evolve(TRAINING, realspace_weight=0.1), MODEL) == ("poisson", "tv")

    def test_supervised(self) -> None:
        """A supervised model optimizes its L1 alone."""
        assert loss_terms(TRAINING, Model(model_type="supervised")) == ("supervised",)


class TestLoggedMetrics:
    def test_logged_names(self) -> None:
        """Each active loss term is logged per stage, plus the learning rate."""
        mixed = attrs.evolve(TRAINING, mae_weight=0.5, realspace_weight=0.1)
        assert logged_metrics(mixed, MODEL, validation=True) == (
            "train_loss",
            "train_poisson",
            "train_mae",
            "train_tv",
            "val_loss",
            "val_poisson",
            "val_mae",
            "val_tv",
            "lr",
        )

    def test_without_validation(self) -> None:
        """Without validation groups nothing val_ is logged."""
        assert logged_metrics(TRAINING, MODEL, validation=False) == (
            "train_loss",
            "train_poisson",
            "lr",
        )


class TestValidationGroups:
    def test_rounds(self) -> None:
        """round(val_fraction · n_groups), Python's rounding."""
        assert [validation_groups(n, 0.05) for n in (9, 10, 11, 100)] == [0, 0, 1, 5]


class TestHasValidation:
    def test_counted_or_meant(self) -> None:
        """With the group count known it counts; without, it says whether a fraction is set."""
        assert has_validation(0.05, 9) is False
        assert has_validation(0.05, 100) is True
        assert has_validation(0.05, None) is True
        assert has_validation(0.0, None) is False


class TestOptimizerTables:
    """The runner's optimizers and schedules take exactly the parameters the tables give them
    (the tables are what the compiler resolves and checks)."""

    # Where each parameter lands in the torch object the runner builds.
    READ: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "momentum": lambda opt: opt.defaults["momentum"],
        "adam_beta1": lambda opt: opt.defaults["betas"][0],
        "adam_beta2": lambda opt: opt.defaults["betas"][1],
        "plateau_factor": lambda s: s.factor,
        "plateau_patience": lambda s: s.patience,
        "plateau_min_lr": lambda s: s.min_lrs[0],
        "plateau_threshold": lambda s: s.threshold,
        "exponential_gamma": lambda s: s.gamma,
    }

    def test_optimizers(self) -> None:
        """Each optimizer name builds, and reads the parameters the table assigns it."""
        from runner.train.optim import build_optimizer

        for name in get_args(Optimizer):
            values = {p: 0.5 + 0.01 * i for i, p in enumerate(OPTIMIZER_PARAMS)}
            training = _resolved(optimizer=name, **values)
            opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], training)
            used = [p for p, users in OPTIMIZER_PARAMS.items() if name in users]
            assert [self.READ[p](opt) for p in used] == [values[p] for p in used]

    def test_schedulers(self) -> None:
        """Each scheduler name builds (constant: none), reading its parameters."""
        from runner.train.optim import build_scheduler

        assert set(get_args(Scheduler)) == set(SCHEDULER_PARAMS)
        for name, used in SCHEDULER_PARAMS.items():
            values = {"plateau_patience": 3, "warmup_epochs": 1}
            values |= {p: 0.25 for p in used if p not in values}
            training = _resolved(scheduler=name, **values)
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
            config = build_scheduler(opt, training, monitor="train_loss", steps_per_epoch=2)
            assert (config is None) == (name == "constant")
            for p in (p for p in used if p in self.READ):
                assert self.READ[p](config["scheduler"]) == values[p]


def _resolved(**fields: Any) -> Training:
    """A resolved Training: every optimizer and scheduler parameter "none" unless given."""
    params = [*OPTIMIZER_PARAMS, *(p for ps in SCHEDULER_PARAMS.values() for p in ps)]
    none = dict.fromkeys(params) | {"gradient_clip_algorithm": None, "nphotons": 1.0}
    return Training(nll_weight=1.0, mae_weight=0.0, **(none | fields))
