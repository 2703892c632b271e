"""Every ``[execution]`` field reaches its consumer: the Trainer, the loaders, the callbacks,
the logger, torch, or the generator. A field added to the schema without a consumer fails
``test_every_field_is_covered``."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from runspec import UNUSED_OPTIONS

from ptycho_spec.errors import RunError
from ptycho_spec.schema import Execution, Model, Training
from ptycho_spec.vocabulary import logged_metrics
from runner.physics.scaling import ScalingConstants
from runner.run.execute import configure_process, cpu_state
from runner.train import effective
from runner.train.module import PtychoModule
from runner.train.resume import ResumeCheckpoint
from runner.train.sampling import EpochSampler, GroupBatches, make_loader
from runner.train.trainer import build_trainer, check_monitor

BASE = Execution(
    accelerator="cpu",
    devices=1,
    strategy="single_device",
    enable_progress_bar=False,
    checkpoint_monitor="val_loss",
)
TRAINING = Training(
    nll_weight=1.0,
    mae_weight=0.0,
    nphotons=1e6,
    adam_beta1=0.9,
    adam_beta2=0.999,
    warmup_steps=10,
    **UNUSED_OPTIONS,
)
MODEL = Model(N=64, n_filters_scale=1, object_big=False)


def _callback(kind: type) -> Callable[[Any], Any]:
    def find(trainer: Any) -> Any:
        return next((c for c in trainer.callbacks if isinstance(c, kind)), None)

    return find


def _ckpt(attr: str) -> Callable[[Any], Any]:
    return lambda t: getattr(_callback(ModelCheckpoint)(t), attr)


# field → (value to set, how to read it back from the trainer "t", loader "l" or module "m")
TRAINER_CASES: dict[str, tuple[dict[str, Any], Callable[[Any], Any], Any]] = {
    "accelerator": ({}, effective.accelerator_name, "cpu"),
    "devices": ({"devices": 2, "strategy": "ddp"}, lambda t: t.num_devices, 2),
    "num_nodes": ({"num_nodes": 2, "strategy": "ddp"}, lambda t: t.num_nodes, 2),
    "strategy": ({"devices": 2, "strategy": "ddp_spawn"}, effective.strategy_name, "ddp_spawn"),
    "precision": ({"precision": "64-true"}, lambda t: t.precision, "64-true"),
    "deterministic": ({"deterministic": "warn"}, lambda t: effective.deterministic_state(), "warn"),
    "accumulate_grad_batches": (
        {"accumulate_grad_batches": 3},
        lambda t: t.accumulate_grad_batches,
        3,
    ),
    "enable_progress_bar": (
        {"enable_progress_bar": True},
        lambda t: t.progress_bar_callback is not None,
        True,
    ),
    "enable_checkpointing": (
        {"enable_checkpointing": False},
        lambda t: t.checkpoint_callback,
        None,
    ),
    "checkpoint_save_top_k": ({"checkpoint_save_top_k": -1}, _ckpt("save_top_k"), -1),
    "checkpoint_monitor": ({"checkpoint_monitor": "train_loss"}, _ckpt("monitor"), "train_loss"),
    "checkpoint_mode": ({"checkpoint_mode": "max"}, _ckpt("mode"), "max"),
    # last.ckpt is the resume point, written by ResumeCheckpoint (runner/train/resume.py).
    "checkpoint_save_last": ({"checkpoint_save_last": False}, _callback(ResumeCheckpoint), None),
    "checkpoint_every_n_steps": ({"checkpoint_every_n_steps": 7}, _ckpt("_every_n_train_steps"), 7),
    "early_stop_patience": (
        {"early_stop_patience": 4},
        lambda t: _callback(EarlyStopping)(t).patience,
        4,
    ),
    "logger": ({"logger": "none"}, lambda t: t.logger, None),
    "log_every_n_steps": ({"log_every_n_steps": 9}, lambda t: t.log_every_n_steps, 9),
}
LOADER_CASES: dict[str, tuple[dict[str, Any], Callable[[Any], Any], Any]] = {
    "num_workers": ({"num_workers": 2}, lambda loader: loader.num_workers, 2),
    "pin_memory": ({"pin_memory": True}, lambda loader: loader.pin_memory, True),
    "persistent_workers": (
        {"num_workers": 1, "persistent_workers": True},
        lambda loader: loader.persistent_workers,
        True,
    ),
    "prefetch_factor": (
        {"num_workers": 1, "prefetch_factor": 5},
        lambda loader: loader.prefetch_factor,
        5,
    ),
}
PROCESS_CASES = {"matmul_precision", "compile", "cpu_threads"}


@pytest.fixture
def restore_torch_flags() -> Iterator[None]:
    """Trainer and configure_process set process-wide torch flags; put them back."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    matmul = torch.get_float32_matmul_precision()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_float32_matmul_precision(matmul)


def _trainer(tmp_path: Path, execution: Execution) -> Any:
    return build_trainer(execution=execution, training=TRAINING, out_dir=tmp_path, run_name="t")


class TestExecutionPassThrough:
    def test_every_field_is_covered(self) -> None:
        """Each Execution field has a consumer check below."""
        names = {f.name for f in attrs.fields(Execution)}
        assert names == set(TRAINER_CASES) | set(LOADER_CASES) | PROCESS_CASES

    @pytest.mark.parametrize("name", sorted(TRAINER_CASES))
    def test_trainer_fields(self, name: str, tmp_path: Path, restore_torch_flags: None) -> None:
        """The Trainer, its callbacks and its logger see the locked value."""
        changes, read, expected = TRAINER_CASES[name]
        trainer = _trainer(tmp_path, attrs.evolve(BASE, **changes))
        assert read(trainer) == expected

    @pytest.mark.parametrize("name", sorted(LOADER_CASES))
    def test_loader_fields(self, name: str) -> None:
        """The DataLoader sees the locked value."""
        changes, read, expected = LOADER_CASES[name]
        data = GroupBatches(
            tensors={"x": torch.zeros(4, 2)},
            indices=torch.zeros(4, 1, dtype=torch.long),
            per_group={},
        )
        loader = make_loader(
            data,
            batch_size=2,
            sampler=EpochSampler(4, seed=0, shuffle=False),
            execution=attrs.evolve(BASE, **changes),
        )
        assert read(loader) == expected

    def test_matmul_precision(self, restore_torch_flags: None) -> None:
        """configure_process sets torch's float32 matmul precision."""
        configure_process(attrs.evolve(BASE, matmul_precision="medium"))
        assert torch.get_float32_matmul_precision() == "medium"

    def test_cpu_threads(self) -> None:
        """The run computes with the lock's thread count (subnormals flushed); the process's
        own count comes back after, and "none" leaves it alone."""
        before = torch.get_num_threads()
        pinned = 1 if before != 1 else 2
        with cpu_state(attrs.evolve(BASE, cpu_threads=pinned)):
            assert torch.get_num_threads() == pinned
            assert torch.tensor(1e-40) == 0  # subnormal float32, flushed
        assert torch.get_num_threads() == before and torch.tensor(1e-40) != 0
        with cpu_state(attrs.evolve(BASE, cpu_threads=None)):
            assert torch.get_num_threads() == before

    def test_compile(self) -> None:
        """execution.compile wraps the generator in torch.compile."""
        scaling = ScalingConstants(
            input_scale=1.0, photon_scale=1.0, mean_photons=1.0, initial_gain=1.0
        )
        module = PtychoModule(
            model=MODEL,
            training=TRAINING,
            probe=torch.ones(64, 64, dtype=torch.complex64),
            scaling=scaling,
            valid_mask=None,
            monitor="val_loss",
            compile_generator=True,
        )
        assert hasattr(module.net.generator, "_orig_mod")


class TestMonitor:
    def test_unlogged_monitor_lists_logged(self) -> None:
        """A monitor the module does not log is an error naming the metrics it logs."""
        logged = logged_metrics(TRAINING, MODEL, validation=False)
        with pytest.raises(RunError, match=r"train_loss.*train_poisson"):
            check_monitor(attrs.evolve(BASE, checkpoint_monitor="val_loss"), logged)


class TestEffective:
    def test_divergence_fails(self) -> None:
        """A result-changing setting that differs from the request stops the run, named."""
        record = {key: {"requested": 1, "effective": 1} for key in effective.RESULT_CHANGING}
        record["precision"] = {"requested": "64-true", "effective": "32-true"}
        with pytest.raises(RunError, match="precision: requested '64-true', got '32-true'"):
            effective.check(record)

    def test_run_writes_requested_equal_effective(self, tmp_path: Path) -> None:
        """A real run records every execution setting, requested equal to effective."""
        from runspec import write_spec

        from ptycho_spec.cli import main

        spec = write_spec(tmp_path, execution="num_workers = 1\npin_memory = true")
        assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 0
        record = tomllib.loads((tmp_path / "out" / "effective.toml").read_text())
        for key in (
            "accelerator",
            "devices",
            "world_size",
            "precision",
            "deterministic",
            "num_workers",
            "batch_size",
            "strategy",
            "log_every_n_steps",
        ):
            assert record[key]["requested"] == record[key]["effective"], key
        assert record["logger"] == {"requested": "csv", "effective": "CSVLogger"}
        assert record["num_workers"]["effective"] == 1
        assert record["pin_memory"] == {
            "requested": True,
            "effective": False,
        }  # CPU: nothing to pin
        assert record["device_ids"]["effective"] == [0]
