"""Batches of groups: a seeded, rank-aware, resumable sampler and a batched dataset.

The sampler, not Lightning, decides the order: a permutation drawn from ``(seed, epoch)`` and
sharded by rank, so a replay on the same world size sees the same batches, and a resumed run
can skip exactly the batches it already trained on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ptycho_spec.schema import Execution


class EpochSampler(Sampler[int]):
    """Sample indices of one rank for one epoch.

    Epoch ``e`` uses ``randperm(n)`` from a generator seeded with ``seed + e`` (identity order
    when ``shuffle`` is false). Like ``DistributedSampler``, the permutation is padded by
    wrapping around to a multiple of ``world_size`` and rank ``r`` takes every
    ``world_size``-th index starting at ``r``. ``skip`` drops that many leading samples of the
    next iteration only (used on resume).
    """

    def __init__(
        self, n: int, *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        if n <= 0:
            msg = "cannot sample from an empty set"
            raise ValueError(msg)
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = len(self) * self.world_size
        order = (order * (total // self.n + 1))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return iter(self.indices()[skip:])

    def __len__(self) -> int:
        return -(-self.n // self.world_size)


class GroupBatches(Dataset[dict[str, torch.Tensor]]):
    """Samples are groups; a batch gathers its tensors in one indexing operation.

    ``tensors`` maps names to arrays whose first axis is the pattern index ``M``;
    ``indices (G, C)`` selects the patterns of each group, so ``tensors[k][indices[g]]`` has
    shape ``(C, ...)``. ``per_group`` tensors (first axis ``G``, e.g. relative coordinates) are
    indexed by group directly.
    """

    def __init__(
        self,
        *,
        tensors: Mapping[str, torch.Tensor],
        indices: torch.Tensor,
        per_group: Mapping[str, torch.Tensor],
    ) -> None:
        self.tensors, self.indices, self.per_group = dict(tensors), indices, dict(per_group)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitems__(self, group_ids: Sequence[int]) -> dict[str, torch.Tensor]:
        ids = torch.as_tensor(group_ids, dtype=torch.long)
        patterns = self.indices[ids]  # (B, C)
        batch = {k: v[patterns] for k, v in self.tensors.items()}
        batch.update({k: v[ids] for k, v in self.per_group.items()})
        return batch

    def __getitem__(self, group_id: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([group_id]).items()}


def keep_batch(batch: Any) -> Any:
    """Collate function for datasets that return whole batches from ``__getitems__``."""
    return batch


def loader_kwargs(execution: Execution) -> dict[str, Any]:
    """The DataLoader settings of ``[execution]``."""
    kwargs: dict[str, Any] = {
        "num_workers": execution.num_workers,
        "pin_memory": execution.pin_memory,
        "persistent_workers": execution.persistent_workers,
    }
    if execution.prefetch_factor is not None:
        kwargs["prefetch_factor"] = execution.prefetch_factor
    return kwargs


class ResumableLoader(DataLoader):
    """A DataLoader whose place in the epoch survives a checkpoint.

    Lightning stores ``state_dict()`` in every checkpoint and calls ``load_state_dict()`` on a
    resume before iterating again; the sampler then skips the batches already trained on.
    ``consumed`` counts the batches the training loop has taken this epoch; ``ResumeCheckpoint``
    sets it as each batch starts, because workers and Lightning's fetcher prefetch ahead of the
    loop, so what the sampler has yielded is not what was trained on.
    """

    consumed = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.consumed = int(state["consumed"])
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip = self.consumed * self.batch_size


def make_loader(
    dataset: GroupBatches,
    *,
    batch_size: int,
    sampler: EpochSampler,
    execution: Execution,
) -> ResumableLoader:
    # Its own generator: worker seeds are then drawn from it, never from the global RNG, whose
    # stream thus does not depend on how often (or after a resume, when) the loader starts.
    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=keep_batch,
        generator=torch.Generator().manual_seed(sampler.seed),
        **loader_kwargs(execution),
    )
