"""Names the compiler and the runner share, each defined once: which optimizer and scheduler
take which parameters, the loss terms a run optimizes, the metrics it logs, how many
training groups it holds out for validation, and how many patterns a split file gives each side.

The compiler checks every monitor a lock names against :func:`logged_metrics`; the runner's
training module logs exactly these names (``runner/train/module.py``), and its optimizers and
schedules (``runner/train/optim.py``) take the parameters these tables give them. Torch-free.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from ptycho_spec.schema import AUTO, Model, Training

# The setting that weights each physics loss term, by the name the term is logged under.
LOSS_TERM_WEIGHTS: Final = MappingProxyType(
    {"poisson": "nll_weight", "mae": "mae_weight", "tv": "realspace_weight"}
)
# The weight of a physics term whose setting is "auto", by the chosen data term (training.loss).
AUTO_WEIGHT_TERM: Final = MappingProxyType({"nll_weight": "poisson", "mae_weight": "mae"})
# Which optimizer uses which parameter, and which scheduler which parameters.
OPTIMIZER_PARAMS: Final = MappingProxyType(
    {
        "momentum": ("sgd",),
        "adam_beta1": ("adam", "adamw"),
        "adam_beta2": ("adam", "adamw"),
    }
)
SCHEDULER_PARAMS: Final = MappingProxyType(
    {
        "constant": (),
        "plateau": ("plateau_factor", "plateau_patience", "plateau_min_lr", "plateau_threshold"),
        "exponential": ("exponential_gamma",),
        "warmup_cosine": ("warmup_epochs", "min_lr_ratio"),
    }
)
SUPERVISED_TERM: Final = "supervised"
STAGES: Final = ("train", "val")
LEARNING_RATE: Final = "lr"


def auto_weight(weight: str, loss: str) -> float:
    """The value an ``"auto"`` loss weight resolves to: 1 for the chosen data term, else 0."""
    return 1.0 if AUTO_WEIGHT_TERM.get(weight) == loss else 0.0


def loss_weights(training: Training) -> dict[str, float]:
    """Weight of each physics loss term, by the name it is logged under (``"auto"`` weights
    as they resolve)."""
    weights = {}
    for term, name in LOSS_TERM_WEIGHTS.items():
        value = getattr(training, name)
        weights[term] = auto_weight(name, training.loss) if value == AUTO else float(value)
    return weights


def loss_terms(training: Training, model: Model) -> tuple[str, ...]:
    """The loss terms a run optimizes: the supervised L1, or each physics term weighted > 0."""
    if model.model_type == "supervised":
        return (SUPERVISED_TERM,)
    return tuple(term for term, weight in loss_weights(training).items() if weight > 0)


def logged_metrics(training: Training, model: Model, *, validation: bool) -> tuple[str, ...]:
    """Every metric a training run logs, hence every name a monitor may take: ``{stage}_loss``
    and ``{stage}_{term}`` per loss term for the training stage and, with validation groups,
    the validation stage; and the learning rate."""
    stages = STAGES if validation else STAGES[:1]
    terms = ("loss", *loss_terms(training, model))
    return (*(f"{stage}_{term}" for stage in stages for term in terms), LEARNING_RATE)


def validation_groups(n_groups: int, val_fraction: float) -> int:
    """Training groups held out for validation: ``round(val_fraction · n_groups)``."""
    return round(val_fraction * n_groups)


def has_validation(val_fraction: float, n_groups: int | None) -> bool:
    """Whether training holds out validation groups (with ``n_groups`` unknown, None:
    whether it means to)."""
    if n_groups is None:
        return val_fraction > 0
    return validation_groups(n_groups, val_fraction) > 0


def split_counts(n_patterns: int, fraction: float) -> tuple[int, int]:
    """(train, test) pattern counts when one file is split by ``data.test_fraction``."""
    n_test = min(max(round(n_patterns * fraction), 1), n_patterns - 1)
    return n_patterns - n_test, n_test
