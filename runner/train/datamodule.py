"""The training data: grouped scans with their scaling constants and train/validation split
(``TrainingSet``), the datasets over them, and the LightningDataModule that serves them."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from attrs import frozen
from torch.utils.data import DataLoader

from ptycho_spec.errors import DataError
from ptycho_spec.schema import Canonical, Execution
from ptycho_spec.vocabulary import validation_groups
from runner.data.grouping import Groups, group_scan
from runner.data.scan import Scan
from runner.physics.scaling import InputCentering, ScalingConstants
from runner.physics.shift import crop_patches
from runner.train.sampling import EpochSampler, GroupBatches, make_loader


@frozen(kw_only=True)
class TrainingSet:
    """Grouped training data with its frozen scaling constants, its train/val split and, with
    ``model.center_input``, the generator's input centering (else None)."""

    scan: Scan
    groups: Groups
    scaling: ScalingConstants
    train_ids: np.ndarray
    val_ids: np.ndarray
    centering: InputCentering | None


def training_set(c: Canonical, scan: Scan) -> TrainingSet:
    groups = group_scan(
        scan.x_px,
        scan.y_px,
        gridsize=c.model.gridsize,
        n_groups=c.data.n_groups,
        neighbor_count=c.data.neighbor_count,
        sequential=c.data.sequential_sampling,
        seed=c.seeds.grouping,
        n_subsample=c.data.n_subsample,
    )
    scaling = ScalingConstants.from_training(
        scan.masked_amplitude(), model=c.model, nphotons=c.training.nphotons, probe=scan.probe
    )
    order = np.random.default_rng(c.seeds.split).permutation(len(groups.indices))
    n_val = validation_groups(len(order), c.training.val_fraction)
    centering = None
    if c.model.center_input:
        centering = InputCentering.from_training(
            scan.masked_amplitude(), input_scale=scaling.input_scale
        )
    return TrainingSet(
        scan=scan,
        groups=groups,
        scaling=scaling,
        train_ids=np.sort(order[n_val:]),
        val_ids=np.sort(order[:n_val]),
        centering=centering,
    )


def group_datasets(
    ts: TrainingSet, *, supervised: bool
) -> tuple[GroupBatches, GroupBatches | None]:
    """Datasets over the training and the validation groups (None without any), sharing one
    copy of the inputs in network units, the relative coordinates and, for supervised
    training, the ground-truth object patches."""
    tensors = {"x": torch.from_numpy(ts.scaling.network_input(ts.scan.masked_amplitude()))}
    if supervised:
        if ts.scan.object is None:
            msg = 'model_type = "supervised" needs a ground-truth object (objectGuess)'
            raise DataError(msg, path=ts.scan.source, key="objectGuess")
        tensors["object"] = crop_patches(
            torch.from_numpy(ts.scan.object),
            torch.from_numpy(ts.scan.x_px),
            torch.from_numpy(ts.scan.y_px),
            ts.scan.N,
        )

    def over(ids: np.ndarray) -> GroupBatches:
        return GroupBatches(
            tensors=tensors,
            indices=torch.from_numpy(ts.groups.indices[ids]),
            per_group={"relative": torch.from_numpy(ts.groups.relative[ids].astype(np.float32))},
        )

    return over(ts.train_ids), (over(ts.val_ids) if len(ts.val_ids) else None)


class GroupsDataModule(pl.LightningDataModule):
    """Training and validation loaders over the groups of a ``TrainingSet``.

    Each rank's sampler shards the same seeded permutation, so the batches depend only on the
    lock and the world size.
    """

    def __init__(self, ts: TrainingSet, *, c: Canonical, execution: Execution) -> None:
        super().__init__()
        self.c, self.execution = c, execution
        self.train_set, self.val_set = group_datasets(
            ts, supervised=c.model.model_type == "supervised"
        )

    def _loader(self, dataset: Any, *, shuffle: bool) -> DataLoader:
        sampler = EpochSampler(
            len(dataset),
            seed=self.c.seeds.loader,
            shuffle=shuffle and not self.c.data.sequential_sampling,
            rank=self.trainer.global_rank if self.trainer else 0,
            world_size=self.trainer.world_size if self.trainer else 1,
        )
        return make_loader(
            dataset,
            batch_size=self.c.training.batch_size,
            sampler=sampler,
            execution=self.execution,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False) if self.val_set is not None else []
