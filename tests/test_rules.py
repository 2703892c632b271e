"""Tests for ptycho_spec.rules: one class per rule, on specs as written."""

from __future__ import annotations

from typing import Any

from strategies import deep_merge, layers_for, toml

from ptycho_spec.errors import Origin, SpecIssue
from ptycho_spec.merge import merge
from ptycho_spec.rules import Context, Finding, check, dedupe, where
from ptycho_spec.validate import build_spec

SIMULATED = {"data": {"source": "simulate", "n_groups": "all"}}


def findings(
    extra: dict[str, Any], base: dict[str, Any] = SIMULATED, installed: frozenset[str] = frozenset()
) -> list[Finding]:
    merged = merge(layers_for(toml(deep_merge(base, extra)), source="s.toml"))
    return check(build_spec(merged), Context(merged.locate, merged.explicit, installed))


def errors(extra: dict[str, Any], **kwargs: Any) -> list[str]:
    return [f.issue.render() for f in findings(extra, **kwargs) if not f.warning]


def warnings(extra: dict[str, Any], **kwargs: Any) -> list[str]:
    return [f.issue.render() for f in findings(extra, **kwargs) if f.warning]


class TestValidBase:
    def test_no_findings(self) -> None:
        """The base spec of these tests is clean."""
        assert findings({}) == []


class TestSourceRequired:
    def test_missing_source(self) -> None:
        """data.source has no default; leaving it out is an error at the spec file."""
        assert errors({}, base={}) == [
            's.toml: data.source: is required: "npz", "simulate" or "ptychodus"'
        ]


class TestNeighbors:
    def test_too_few_neighbors(self) -> None:
        """gridsize 2 needs at least 4 neighbours; both locations are named."""
        text = errors({"model": {"gridsize": 2}, "data": {"neighbor_count": 3}})
        assert text == [
            "s.toml:6: data.neighbor_count: must be ≥ gridsize² = 4 (model.gridsize = 2 (s.toml:9))"
        ]

    def test_none_with_gridsize(self) -> None:
        """gridsize > 1 cannot do without a neighbour pool."""
        assert (
            "is needed when gridsize > 1"
            in errors({"model": {"gridsize": 2}, "data": {"neighbor_count": "none"}})[0]
        )

    def test_no_effect_with_gridsize_1(self) -> None:
        """An explicit pool with gridsize 1 would have no effect."""
        assert "has no effect with gridsize 1" in errors({"data": {"neighbor_count": 4}})[0]


class TestObjectBig:
    def test_true_with_gridsize_1(self) -> None:
        """object_big = true with one patch per sample is refused."""
        assert (
            "model.object_big: has no effect with gridsize 1"
            in errors({"model": {"object_big": True}})[0]
        )


class TestProbeTrainable:
    def test_warns_without_overlap(self) -> None:
        """A trainable probe at gridsize 1, or without the shared canvas, warns and names the
        stages that do find the probe."""
        for model in (
            {"probe_trainable": True},
            {"probe_trainable": True, "gridsize": 2, "object_big": False},
        ):
            extra = {"model": model, "data": {"neighbor_count": 4} if "gridsize" in model else {}}
            [text] = warnings(extra)
            assert (
                text.startswith("s.toml:") and "model.probe_trainable: without the overlap" in text
            )
            assert "training.calibrate_probe" in text and "refine.probe = true" in text

    def test_quiet_with_overlap(self) -> None:
        """At gridsize 2 with the shared canvas the overlap ties the probe to the object."""
        model = {"probe_trainable": True, "gridsize": 2}
        assert findings({"model": model, "data": {"neighbor_count": 4}}) == []


class TestPadObject:
    def test_probe_big_without_padding(self) -> None:
        """probe_big only acts on a padded object."""
        assert (
            "model.probe_big: has no effect without object padding"
            in errors({"model": {"pad_object": False, "probe_big": True}})[0]
        )

    def test_probe_big_follows_padding(self) -> None:
        """Left "auto", probe_big takes pad_object's value: no conflict."""
        assert errors({"model": {"pad_object": False}}) == []


class TestLoaderWorkers:
    def test_persistent_and_prefetch_need_workers(self) -> None:
        """Both loader knobs need num_workers > 0."""
        found = errors({"execution": {"persistent_workers": True, "prefetch_factor": 2}})
        assert [m.split(": ")[1] for m in found] == [
            "execution.persistent_workers",
            "execution.prefetch_factor",
        ]


class TestPrecisionOnCpu:
    def test_fp16_refused(self) -> None:
        """16-mixed on the CPU is an error."""
        assert (
            "is not supported on the CPU"
            in errors({"execution": {"accelerator": "cpu", "precision": "16-mixed"}})[0]
        )

    def test_bf16_warns(self) -> None:
        """bf16-mixed on the CPU is allowed with a warning."""
        assert (
            "slow" in warnings({"execution": {"accelerator": "cpu", "precision": "bf16-mixed"}})[0]
        )


class TestProcesses:
    def test_ddp_with_one_process_warns(self) -> None:
        """A multi-process strategy with one process is a warning."""
        assert "single process" in warnings({"execution": {"strategy": "ddp"}})[0]

    def test_single_device_with_many(self) -> None:
        """single_device cannot drive several processes."""
        assert (
            "cannot drive 4 processes"
            in errors({"execution": {"strategy": "single_device", "devices": 2, "num_nodes": 2}})[0]
        )


class TestDeterministicCompile:
    def test_warns(self) -> None:
        """deterministic with torch.compile is a warning."""
        assert "torch.compile" in warnings({"execution": {"compile": True}})[0]


class TestLoggerInstalled:
    def test_missing_package_names_the_extra(self) -> None:
        """A logger whose package is missing names the extra to install."""
        assert errors({"execution": {"logger": "tensorboard"}}) == [
            's.toml:8: execution.logger: needs the tensorboard package: pip install "ptycho-spec[tensorboard]"'
        ]

    def test_installed_package(self) -> None:
        """With the package present there is nothing to report."""
        assert errors({"execution": {"logger": "mlflow"}}, installed=frozenset({"mlflow"})) == []


class TestCheckpointMonitor:
    def test_unknown_metric_lists_the_logged_ones(self) -> None:
        """The monitor must be a metric the run logs; the error lists them."""
        [message] = errors({"execution": {"checkpoint_monitor": "val_acc"}})
        assert message.endswith(
            "must be a metric this run logs: train_loss, train_poisson, val_loss, val_poisson, "
            'lr (got "val_acc")'
        )

    def test_logged_terms_are_accepted(self) -> None:
        """Every weighted loss term is a valid monitor: total variation, MAE, supervised."""
        training = {"realspace_weight": 0.1, "mae_weight": 0.5}
        for monitor in ("train_tv", "val_tv", "train_mae", "val_mae", "train_poisson"):
            assert (
                errors({"training": training, "execution": {"checkpoint_monitor": monitor}}) == []
            )
        supervised = {"model": {"model_type": "supervised"}}
        assert errors({**supervised, "execution": {"checkpoint_monitor": "train_supervised"}}) == []

    def test_unweighted_term_is_refused(self) -> None:
        """A term weighted 0 is not logged, so it cannot be monitored."""
        [message] = errors({"execution": {"checkpoint_monitor": "train_mae"}})
        assert "must be a metric this run logs" in message and '(got "train_mae")' in message

    def test_val_metric_without_validation_groups(self) -> None:
        """A val_ metric is refused when val_fraction · n_groups rounds to no group."""
        [message] = errors(
            {"data": {"n_groups": 4}, "execution": {"checkpoint_monitor": "val_loss"}}
        )
        assert message == (
            's.toml:8: execution.checkpoint_monitor: "val_loss" is not logged without validation '
            "data: no group is held out (training.val_fraction = 0.05 (default); "
            "data.n_groups = 4 (s.toml:5))"
        )

    def test_val_metric_without_validation(self) -> None:
        """A val_ metric needs validation data."""
        [message] = errors(
            {"execution": {"checkpoint_monitor": "val_loss"}, "training": {"val_fraction": 0}}
        )
        assert (
            "not logged without validation data" in message
            and "training.val_fraction = 0.0" in message
        )


class TestTaskBundle:
    def test_infer_needs_a_bundle(self) -> None:
        """An inference-only run needs a bundle."""
        assert "inference.bundle: is required" in errors({"run": {"task": "infer"}})[0]

    def test_bundle_without_effect(self) -> None:
        """A bundle in a training task would be ignored, so it is refused."""
        assert "has no effect" in errors({"inference": {"bundle": "m.bundle"}})[0]


class TestInferSettings:
    def test_model_and_training_come_from_the_bundle(self) -> None:
        """model.* and training.* settings are refused in an inference-only run."""
        found = errors(
            {
                "run": {"task": "infer"},
                "inference": {"bundle": "m.bundle"},
                "model": {"gridsize": 1},
                "training": {"nepochs": 2},
            }
        )
        assert [m.split(": ")[1] for m in found] == ["model.gridsize", "training.nepochs"]


class TestNpzFiles:
    def test_training_needs_a_train_file(self) -> None:
        """source = "npz" needs train_file to train and test data to infer."""
        found = errors({}, base={"data": {"source": "npz"}})
        assert [m.split(": ")[1] for m in found] == ["data.train_file", "data.test_file"]


class TestTestSplit:
    def test_fraction_and_file(self) -> None:
        """test_fraction and test_file exclude each other."""
        base = {
            "data": {
                "source": "npz",
                "train_file": "a.npz",
                "test_file": "b.npz",
                "test_fraction": 0.1,
            }
        }
        assert (
            "data.test_fraction: has no effect when data.test_file is set"
            in errors({}, base=base)[0]
        )


class TestSimulateFiles:
    def test_files_with_simulated_data(self) -> None:
        """Data files would be ignored by a simulation."""
        assert "has no effect with simulated data" in errors({"data": {"train_file": "a.npz"}})[0]

    def test_test_objects_for_inference(self) -> None:
        """train+infer on simulated data needs a test object."""
        assert "must be ≥ 1" in errors({"data": {"simulate": {"n_test_objects": 0}}})[0]


class TestForeignTables:
    def test_simulate_settings_with_npz(self) -> None:
        """[data.simulate] settings act only with simulated data."""
        base = {
            "data": {
                "source": "npz",
                "train_file": "a.npz",
                "test_fraction": 0.1,
                "simulate": {"nphotons": 10.0},
            }
        }
        assert (
            'data.simulate.nphotons: has no effect unless data.source = "simulate"'
            in errors({}, base=base)[0]
        )

    def test_defaults_are_fine(self) -> None:
        """Restating a default is not an error."""
        base = {
            "data": {
                "source": "npz",
                "train_file": "a.npz",
                "test_fraction": 0.1,
                "simulate": {"nphotons": 1e9},
            }
        }
        assert errors({}, base=base) == []


class TestObjectSize:
    def test_too_small_for_a_scan(self) -> None:
        """The object must hold at least a patch plus a scan step."""
        assert (
            "must be ≥ N + scan_step_test = 74"
            in errors({"model": {"N": 64}, "data": {"simulate": {"object_size": 70}}})[0]
        )


class TestOptimizerParams:
    def test_momentum_with_adam(self) -> None:
        """An explicit momentum with adam has no effect."""
        assert errors({"training": {"momentum": 0.5}}) == [
            's.toml:8: training.momentum: has no effect here; remove it (or set "none") (training.optimizer = "adam" (default))'
        ]

    def test_none_where_needed(self) -> None:
        """sgd needs a momentum; "none" is refused."""
        assert "is needed here" in errors({"training": {"optimizer": "sgd", "momentum": "none"}})[0]


class TestSchedulerParams:
    def test_plateau_settings_with_constant(self) -> None:
        """plateau parameters do nothing with another scheduler."""
        assert (
            "training.plateau_factor: has no effect here"
            in errors({"training": {"plateau_factor": 0.5}})[0]
        )

    def test_matching_scheduler(self) -> None:
        """The scheduler's own parameters are accepted."""
        assert errors({"training": {"scheduler": "plateau", "plateau_factor": 0.5}}) == []


class TestClipAlgorithm:
    def test_algorithm_without_clipping(self) -> None:
        """A clip algorithm without a clip value has no effect."""
        assert (
            "gradient_clip_algorithm: has no effect here"
            in errors({"training": {"gradient_clip_algorithm": "value"}})[0]
        )


class TestLossWeights:
    def test_all_zero(self) -> None:
        """At least one loss weight must be positive."""
        assert (
            "all loss weights are 0"
            in errors({"training": {"nll_weight": 0.0, "mae_weight": 0.0}})[0]
        )


class TestRefineTask:
    def test_refinement_needs_a_reconstruction(self) -> None:
        """Refinement in a training-only task is refused, naming both settings."""
        assert errors({"run": {"task": "train"}, "refine": {"iterations": 3}}) == [
            "s.toml:11: refine.iterations: needs a reconstruction to refine; use run.task = "
            '"train+infer" or "infer" (run.task = "train" (s.toml:8))'
        ]

    def test_tasks_that_reconstruct(self) -> None:
        """train+infer refines what it reconstructs."""
        assert errors({"refine": {"iterations": 3, "probe": True, "batch_size": 8}}) == []


class TestRefineOptions:
    def test_options_without_refinement(self) -> None:
        """probe, positions and a batch size act only when refinement runs; each is named."""
        assert errors(
            {"refine": {"iterations": 0, "probe": True, "positions": True, "batch_size": 8}}
        ) == [
            f"s.toml:{line}: refine.{name}: has no effect without refinement; remove it or set "
            "refine.iterations ≥ 1 (refine.iterations = 0 (s.toml:8))"
            for line, name in ((9, "probe"), (10, "positions"), (11, "batch_size"))
        ]

    def test_default_iterations(self) -> None:
        """Refinement is off by default, and a location "default" says so."""
        assert errors({"refine": {"probe": True}}) == [
            "s.toml:8: refine.probe: has no effect without refinement; remove it or set "
            "refine.iterations ≥ 1 (refine.iterations = 0 (default))"
        ]

    def test_defaults_are_fine(self) -> None:
        """Options left at their defaults need no refinement."""
        assert errors({"refine": {"probe": False, "batch_size": 32}}) == []

    def test_batch_size_acts_in_calibration(self) -> None:
        """The probe calibration before training takes refine.batch_size, refinement or not."""
        extra = {"training": {"calibrate_probe": 20}, "refine": {"batch_size": 8}}
        assert errors(extra) == []
        [probe] = errors(extra | {"refine": {"batch_size": 8, "probe": True}})
        assert "refine.probe: has no effect" in probe


class TestWhere:
    def test_locations(self) -> None:
        """Origins render as file:line, variable, argument or layer."""
        assert where(Origin("spec", file="s.toml", line=3)) == "s.toml:3"
        assert where(Origin("env", detail="PTYCHO__X")) == "PTYCHO__X"
        assert where(Origin("default", file="s.toml")) == "default"
        assert where(Origin("inferred", file="d.npz")) == "inferred d.npz"


class TestDedupe:
    def test_repeats_removed(self) -> None:
        """The same finding from both passes is reported once."""
        issue = SpecIssue("a.b", "bad")
        assert dedupe([Finding(issue), Finding(issue), Finding(issue, warning=True)]) == [
            Finding(issue),
            Finding(issue, warning=True),
        ]


class TestValidationSplit:
    def test_no_group_left_to_train(self) -> None:
        """Holding out every group for validation is an error naming both settings."""
        assert errors({"data": {"n_groups": 1}, "training": {"val_fraction": 0.6}}) == [
            "s.toml:8: training.val_fraction: holds out every group (1 of 1) for validation: "
            "none is left to train on (data.n_groups = 1 (s.toml:5))"
        ]

    def test_some_left(self) -> None:
        """A split that leaves training groups is fine."""
        assert errors({"data": {"n_groups": 2}, "training": {"val_fraction": 0.5}}) == []


class TestTrim:
    def test_trim_cuts_the_whole_patch(self) -> None:
        """inference.trim must leave a patch centre to stitch."""
        [message] = errors(
            {"run": {"task": "train+infer"}, "model": {"N": 64}, "inference": {"trim": 32}}
        )
        assert "inference.trim: must be less than N/2 = 32" in message and "model.N = 64" in message

    def test_training_only(self) -> None:
        """A run that stitches nothing does not judge the trim."""
        assert (
            errors({"run": {"task": "train"}, "model": {"N": 64}, "inference": {"trim": 40}}) == []
        )
