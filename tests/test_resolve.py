"""Tests for ptycho_spec.resolve: every "auto" and derived value, with its provenance."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
import pytest
from strategies import HOST, TRAIN_NPZ, compile_text, deep_merge, scan_facts, toml

from ptycho_spec.errors import DataError, Origin, SpecError
from ptycho_spec.facts import InputFacts
from ptycho_spec.lock import Lock
from ptycho_spec.resolve import derive_seed, raster_count, split_counts

SIM = {"run": {"task": "train"}, "data": {"source": "simulate", "n_groups": "all"}}
NPZ = {"run": {"task": "train"}, "data": {"source": "npz", "train_file": "train.npz"}}


def compiled(
    extra: dict[str, Any] | None = None,
    base: dict[str, Any] = SIM,
    facts: InputFacts | None = None,
    **kwargs: Any,
) -> Lock:
    return compile_text(toml(deep_merge(base, extra or {})), facts, **kwargs)


def npz(**kwargs: Any) -> InputFacts:
    return InputFacts(files=(scan_facts(**kwargs),))


def failures(
    extra: dict[str, Any],
    base: dict[str, Any] = SIM,
    facts: InputFacts | None = None,
    **kwargs: Any,
) -> list[str]:
    with pytest.raises(SpecError) as caught:
        compiled(extra, base, facts, **kwargs)
    return [issue.render() for issue in caught.value.issues]


class TestDeriveSeed:
    def test_formula(self) -> None:
        """Seeds are the first 4 bytes of sha256("ptycho-spec:{seed}:{purpose}"), 31 bits."""
        digest = hashlib.sha256(b"ptycho-spec:5:init").digest()
        assert derive_seed(5, "init") == int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def test_locked_per_purpose(self) -> None:
        """The lock holds one derived seed per purpose, with derived provenance."""
        lock = compiled({"run": {"seed": 3}})
        assert lock.resolved.canonical.seeds.noise == derive_seed(3, "noise")
        assert lock.provenance["seeds.noise"] == Origin("derived", detail="run.seed = 3")

    def test_refinement_seed(self) -> None:
        """The refinement minibatch order has its own derived seed."""
        lock = compiled({"run": {"seed": 3}})
        assert lock.resolved.canonical.seeds.refine == derive_seed(3, "refine")
        assert lock.provenance["seeds.refine"] == Origin("derived", detail="run.seed = 3")


class TestSplitCounts:
    def test_rounds_and_keeps_both_sides(self) -> None:
        """A split keeps at least one pattern on each side."""
        assert split_counts(100, 0.1) == (90, 10)
        assert split_counts(3, 0.01) == (2, 1)
        assert split_counts(3, 0.99) == (1, 2)


class TestRasterCount:
    def test_formula(self) -> None:
        """((size - N) // step + 1)² per object."""
        assert raster_count(128, 64, 4, 2) == 17 * 17 * 2


class TestRunIdentity:
    def test_name_and_output_dir(self) -> None:
        """run.name defaults to the spec stem and output_dir resolves beside the spec (the lock
        names it relative to the spec's folder)."""
        run = compiled().resolved.canonical.run
        assert (run.name, run.output_dir) == ("spec", "runs/spec")

    def test_output_dir_from_a_base_is_relative_to_the_base(self) -> None:
        """A relative path resolves against the folder of the file that set it."""
        base = ("/virtual/bases/base.toml", toml({"run": {"output_dir": "out/{name}"}}))
        lock = compiled({"run": {"name": "x"}}, bases=[base])
        assert lock.resolved.canonical.run.output_dir == "/virtual/bases/out/x"

    def test_set_paths_are_relative_to_the_working_directory(self) -> None:
        """--set and PTYCHO__ paths resolve against the working directory."""
        lock = compiled(sets=["run.output_dir='o'"])
        assert lock.resolved.canonical.run.output_dir == "/virtual/cwd/o"


class TestModelSize:
    def test_from_the_probe(self) -> None:
        """N is the probe side in the data, with inferred provenance naming the file."""
        lock = compiled(base=NPZ, facts=npz(side=128))
        assert lock.resolved.canonical.model.N == 128
        assert lock.provenance["model.N"] == Origin(
            "inferred", file="train.npz", detail="probeGuess 128×128"
        )

    def test_simulated_disk(self) -> None:
        """A simulated disk probe gives N = 64."""
        assert compiled().provenance["model.N"].layer == "derived"

    def test_contradiction_names_both_origins(self) -> None:
        """An explicit N that disagrees with the data is an error, never replaced."""
        assert failures({"model": {"N": 128}}, base=NPZ, facts=npz(side=64)) == [
            f"/virtual/specs/spec.toml:11: model.N: 128 (/virtual/specs/spec.toml:11) contradicts probeGuess 64×64 ({TRAIN_NPZ})"
        ]

    def test_unsupported_probe_side(self) -> None:
        """A probe side that is not 64, 128 or 256 is refused."""
        assert "N must be one of 64, 128, 256" in failures({}, base=NPZ, facts=npz(side=100))[0]


class TestMeasurement:
    def test_inferred(self) -> None:
        """Counts data are recognised and locked with inferred provenance."""
        lock = compiled(base=NPZ, facts=npz(measurement="counts", mean_counts=50.0))
        assert lock.resolved.canonical.data.measurement == "counts"
        assert lock.provenance["data.measurement"].layer == "inferred"

    def test_explicit_amplitude_on_counts(self) -> None:
        """Calling integer data amplitudes is a data error (exit 4)."""
        with pytest.raises(DataError, match="holds counts") as caught:
            compiled(
                {"data": {"measurement": "amplitude"}},
                base=NPZ,
                facts=npz(measurement="counts", mean_counts=5.0),
            )
        assert caught.value.exit_code == 4

    def test_simulated_counts(self) -> None:
        """Simulated patterns are amplitudes."""
        assert (
            "simulated patterns are amplitudes" in failures({"data": {"measurement": "counts"}})[0]
        )


class TestNphotons:
    def test_simulated(self) -> None:
        """Simulated data lock the simulation's photon count, derived."""
        lock = compiled({"data": {"simulate": {"nphotons": 1e5}}})
        assert lock.resolved.canonical.training.nphotons == 1e5
        assert lock.provenance["training.nphotons"] == Origin(
            "derived", detail="data.simulate.nphotons"
        )

    def test_simulated_contradiction(self) -> None:
        """An explicit photon count that differs from the simulation is refused."""
        assert (
            "differs from the simulated photon count"
            in failures({"training": {"nphotons": 10.0}})[0]
        )

    def test_counts_mean(self) -> None:
        """Counts data give their mean counts per pattern."""
        lock = compiled(base=NPZ, facts=npz(measurement="counts", mean_counts=1234.5))
        assert lock.resolved.canonical.training.nphotons == 1234.5
        assert lock.provenance["training.nphotons"].detail == "mean counts per pattern"

    def test_stored_array_and_default(self) -> None:
        """An nphotons array in amplitude data is used, else 1e9."""
        assert (
            compiled(base=NPZ, facts=npz(nphotons=5e6)).resolved.canonical.training.nphotons == 5e6
        )
        assert compiled(base=NPZ, facts=npz()).resolved.canonical.training.nphotons == 1e9

    def test_array_contradiction(self) -> None:
        """An explicit value that contradicts the file's nphotons array is refused."""
        assert (
            "contradicts the nphotons array"
            in failures({"training": {"nphotons": 7.0}}, base=NPZ, facts=npz(nphotons=5e6))[0]
        )


class TestGroups:
    def test_default_is_512(self) -> None:
        """n_groups "auto" means 512 for training."""
        lock = compiled({"data": {"n_groups": "auto"}}, base=NPZ, facts=npz(n_patterns=1000))
        assert lock.resolved.canonical.data.n_groups == 512

    def test_too_many_suggests_all(self) -> None:
        """More groups than patterns is an error suggesting "all"."""
        [message] = failures({}, base=NPZ, facts=npz(n_patterns=100))
        assert message.endswith(
            'data.n_groups: 512 exceeds the 100 patterns of /virtual/specs/train.npz; set "all" or fewer'
        )

    def test_all_with_a_split(self) -> None:
        """ "all" counts the training side of a test_fraction split."""
        base = deep_merge(
            NPZ,
            {"run": {"task": "train+infer"}, "data": {"test_fraction": 0.25, "n_groups": "all"}},
        )
        assert compiled(base=base, facts=npz(n_patterns=100)).resolved.canonical.data.n_groups == 75

    def test_all_simulated(self) -> None:
        """ "all" counts the simulated raster scans."""
        lock = compiled({"data": {"simulate": {"object_size": 128, "n_train_objects": 2}}})
        assert lock.resolved.canonical.data.n_groups == 17 * 17 * 2

    def test_all_of_a_subsample(self) -> None:
        """ "all" counts the patterns data.n_subsample keeps, which must exist."""
        lock = compiled({"data": {"n_groups": "all", "n_subsample": 30}}, base=NPZ, facts=npz())
        assert lock.resolved.canonical.data.n_groups == 30
        [message] = failures({"data": {"n_subsample": 2000}}, base=NPZ, facts=npz())
        assert message.endswith(
            "data.n_subsample: 2000 exceeds the 1200 patterns of /virtual/specs/train.npz"
        )

    def test_one_pattern_cannot_be_split(self) -> None:
        """A test_fraction split of a single pattern leaves one side empty: an error there."""
        base = deep_merge(NPZ, {"run": {"task": "train+infer"}, "data": {"test_fraction": 0.5}})
        [message] = failures({"data": {"n_groups": "all"}}, base=base, facts=npz(n_patterns=1))
        assert message.endswith(
            "data.test_fraction: cannot split the 1 pattern of /virtual/specs/train.npz into "
            "training and test patterns"
        )

    def test_neighbours_need_more_patterns(self) -> None:
        """gridsize 2 draws each group from neighbor_count other patterns: too few patterns
        is an error at neighbor_count, naming the gridsize."""
        extra = {"data": {"n_groups": "all"}, "model": {"gridsize": 2}}
        [message] = failures(extra, base=NPZ, facts=npz(n_patterns=4))
        assert message.endswith(
            "data.neighbor_count: 4 needs more than the 4 patterns of /virtual/specs/train.npz "
            "(model.gridsize = 2 (/virtual/specs/spec.toml:12))"
        )


class TestModelFlags:
    def test_gridsize_2(self) -> None:
        """gridsize > 1 turns on object_big and a pool of 4 neighbours."""
        lock = compiled({"model": {"gridsize": 2}})
        assert (
            lock.resolved.canonical.model.object_big,
            lock.resolved.canonical.data.neighbor_count,
        ) == (True, 4)

    def test_gridsize_3_pool_covers_the_group(self) -> None:
        """The automatic pool is at least gridsize²."""
        assert compiled({"model": {"gridsize": 3}}).resolved.canonical.data.neighbor_count == 9

    def test_gridsize_1(self) -> None:
        """gridsize 1 has no pool and no shared canvas."""
        lock = compiled()
        assert (
            lock.resolved.canonical.model.object_big,
            lock.resolved.canonical.data.neighbor_count,
        ) == (False, None)


class TestObjectPadding:
    def test_full_window_by_default(self) -> None:
        """The object fills the patch unless padding is asked for; probe_big follows."""
        model = compiled(base=NPZ, facts=npz(central_share=0.97)).resolved.canonical.model
        assert (model.pad_object, model.probe_big) == (False, False)

    @pytest.mark.parametrize(("share", "warned"), [(0.97, False), (0.95, False), (0.72, True)])
    def test_padding_a_wide_probe_warns(self, share: float, warned: bool) -> None:
        """An explicit pad_object is kept whatever the probe, with a warning naming the file
        when less than 95 % of the probe's intensity lies on the central box."""
        lock = compiled({"model": {"pad_object": True}}, base=NPZ, facts=npz(central_share=share))
        model = lock.resolved.canonical.model
        assert (model.pad_object, model.probe_big) == (True, True)
        expected = [
            f"probeGuess holds {share:.0%} of its intensity on the central N/2 box "
            f"({TRAIN_NPZ}); a padded object cannot explain the rest"
        ]
        warnings = [w.message for w in lock.warnings if w.path == "model.pad_object"]
        assert warnings == (expected if warned else [])


class TestTraining:
    @pytest.mark.parametrize(
        ("training", "steps"),
        [
            ({}, 10),
            ({"optimizer": "adamw"}, 10),
            ({"optimizer": "sgd"}, 0),
            ({"scheduler": "warmup_cosine"}, 0),
            ({"optimizer": "sgd", "warmup_steps": 5}, 5),
        ],
    )
    def test_warmup_steps(self, training: dict[str, Any], steps: int) -> None:
        """Adam and AdamW warm up for 10 steps, SGD not at all, warmup_cosine by its own
        epochs; an explicit value is kept."""
        lock = compiled({"training": training})
        assert lock.resolved.canonical.training.warmup_steps == steps

    def test_optimizer_parameters(self) -> None:
        """Parameters of the chosen optimizer get defaults; the others become none."""
        training = compiled({"training": {"optimizer": "sgd"}}).resolved.canonical.training
        assert (training.momentum, training.adam_beta1, training.adam_beta2) == (0.9, None, None)

    def test_scheduler_parameters(self) -> None:
        """Only the chosen scheduler's parameters are set."""
        training = compiled({"training": {"scheduler": "plateau"}}).resolved.canonical.training
        assert (training.plateau_factor, training.plateau_patience, training.warmup_epochs) == (
            0.5,
            2,
            None,
        )

    def test_loss_weights(self) -> None:
        """The loss picks its weight; the other is 0."""
        training = compiled({"training": {"loss": "mae"}}).resolved.canonical.training
        assert (training.nll_weight, training.mae_weight) == (0.0, 1.0)

    def test_clip_algorithm(self) -> None:
        """Clipping defaults to the norm algorithm."""
        assert (
            compiled(
                {"training": {"gradient_clip_val": 1.0}}
            ).resolved.canonical.training.gradient_clip_algorithm
            == "norm"
        )


class TestInference:
    def test_trim_and_batch(self) -> None:
        """trim is N/4; the inference batch follows the training batch."""
        inference = compiled({"training": {"batch_size": 8}}).resolved.canonical.inference
        assert (inference.trim, inference.batch_size) == (16, 8)

    def test_refine_and_alignment_defaults(self) -> None:
        """A new spec aligns patches and does not refine, both locked as defaults."""
        lock = compiled({"run": {"task": "train+infer"}})
        canonical = lock.resolved.canonical
        assert canonical.inference.align_patches is True
        assert canonical.refine.iterations == 0
        assert lock.provenance["inference.align_patches"] == Origin("default")
        assert lock.provenance["refine.iterations"] == Origin("default")


class TestExecution:
    def test_host_accelerator(self) -> None:
        """ "auto" takes the compiling host's accelerator and device count."""
        gpu_host = attrs.evolve(HOST, accelerator="cuda", device_count=4)
        lock = compiled({"execution": {"accelerator": "auto", "devices": "auto"}}, host=gpu_host)
        execution = lock.resolved.execution
        assert (execution.accelerator, execution.devices, execution.strategy) == ("cuda", 4, "ddp")
        assert lock.provenance["execution.devices"].layer == "host"

    def test_cpu_threads_from_the_host(self) -> None:
        """ "auto" locks the host's thread count, shared among the processes of a CPU run; a GPU
        run's one process per device keeps them all."""
        host = attrs.evolve(HOST, cpu_threads=8, cpu_threads_source="8 CPU(s) usable")
        lock = compiled({"execution": {"devices": 2, "strategy": "ddp"}}, host=host)
        assert lock.resolved.execution.cpu_threads == 4
        assert lock.provenance["execution.cpu_threads"] == Origin(
            "host", detail="8 CPU(s) usable, over 2 processes"
        )
        gpu = {"accelerator": "cuda", "devices": 2, "strategy": "ddp"}
        assert compiled({"execution": gpu}, host=host).resolved.execution.cpu_threads == 8
        pinned = compiled({"execution": {"cpu_threads": 3}}, host=host)
        assert pinned.resolved.execution.cpu_threads == 3

    def test_gpu_requested_on_a_cpu_host(self) -> None:
        """An explicit GPU run compiled on a CPU host warns; counting its GPUs is an error."""
        lock = compiled({"execution": {"accelerator": "cuda", "devices": 2, "strategy": "ddp"}})
        assert any("has no cuda device" in w.message for w in lock.warnings)
        assert (
            "set a number" in failures({"execution": {"accelerator": "cuda", "devices": "auto"}})[0]
        )

    def test_gpu_is_locked_as_cuda(self) -> None:
        """Lightning's "gpu" is accepted with a warning and locked under the one name, "cuda"."""
        lock = compiled({"execution": {"accelerator": "gpu", "devices": 2, "strategy": "ddp"}})
        assert lock.resolved.execution.accelerator == "cuda"
        assert any('"gpu" is a deprecated value; use "cuda"' in w.message for w in lock.warnings)

    def test_progress_bar_and_monitor(self) -> None:
        """The progress bar follows the terminal; the monitor follows validation."""
        lock = compiled({"training": {"val_fraction": 0.0}}, host=attrs.evolve(HOST, terminal=True))
        assert lock.resolved.execution.enable_progress_bar is True
        assert lock.resolved.execution.checkpoint_monitor == "train_loss"

    def test_monitor_without_validation_groups(self) -> None:
        """Too few groups for val_fraction to hold one out: the default monitor is the training
        loss, and the provenance says why."""
        lock = compiled({"data": {"n_groups": 4}})
        assert lock.resolved.execution.checkpoint_monitor == "train_loss"
        assert lock.provenance["execution.checkpoint_monitor"] == Origin(
            "derived", detail="training.val_fraction = 0.05 holds out none of data.n_groups = 4"
        )

    def test_explicit_val_monitor_without_validation_groups(self) -> None:
        """An explicit val_ monitor with no group held out is an error at compile time; with
        n_groups = "all" it is found once the patterns are counted."""
        small = {"simulate": {"object_size": 72}}  # (72 − 64)/4 + 1 = 3 → 9 patterns
        [message] = failures({"data": small, "execution": {"checkpoint_monitor": "val_loss"}})
        assert 'execution.checkpoint_monitor: "val_loss" is not logged' in message
        assert "data.n_groups = 9 (derived all 9 patterns of simulated train scans)" in message


class TestInferTask:
    def bundle_lock(self, **model: Any) -> Lock:
        return compiled({"model": {"N": 64, "gridsize": 2, **model}, "training": {"batch_size": 4}})

    def infer(self, bundle: Lock, facts: tuple[Any, ...] = ()) -> Lock:
        spec = {
            "run": {"task": "infer"},
            "data": {"source": "npz", "test_file": "test.npz"},
            "inference": {"bundle": "m.bundle"},
        }
        return compiled(base=spec, facts=InputFacts(files=facts, bundle=bundle))

    def test_model_and_training_come_from_the_bundle(self) -> None:
        """The bundle's model and training settings are locked with bundle provenance."""
        test = scan_facts(role="test", path="/virtual/specs/test.npz", n_patterns=30)
        lock = self.infer(self.bundle_lock(), (test,))
        canonical = lock.resolved.canonical
        assert (canonical.model.gridsize, canonical.training.batch_size) == (2, 4)
        assert lock.provenance["model.gridsize"] == Origin("bundle", file="m.bundle")
        assert (canonical.data.n_groups, canonical.inference.batch_size) == (30, 64)

    def test_test_data_must_fit_the_model(self) -> None:
        """Test data with another probe side contradict the bundle's N."""
        test = scan_facts(role="test", path="/virtual/specs/test.npz", side=128)
        with pytest.raises(
            SpecError, match=r"64 \(bundle /virtual/specs/m.bundle\) contradicts probeGuess 128×128"
        ):
            self.infer(self.bundle_lock(), (test,))


class TestOtherSources:
    def test_ptychodus_needs_both_files(self) -> None:
        """A ptychodus source names its product and its diffraction file."""
        found = failures({}, base={"data": {"source": "ptychodus"}})
        assert any("data.ptychodus.product_file: is required" in f for f in found)
        assert any("data.ptychodus.diffraction_file: is required" in f for f in found)

    def test_supervised_needs_ground_truth(self) -> None:
        """Supervised training needs objectGuess in the data."""
        assert (
            "needs ground truth"
            in failures(
                {"model": {"model_type": "supervised"}, "data": {"n_groups": "all"}},
                base=NPZ,
                facts=npz(),
            )[0]
        )
        compiled(
            {"model": {"model_type": "supervised"}, "data": {"n_groups": "all"}},
            base=NPZ,
            facts=npz(has_object=True),
        )
