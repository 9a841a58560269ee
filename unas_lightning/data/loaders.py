"""Training loaders that resume mid-epoch exactly where a killed run stopped.

Lightning saves the ``state_dict()`` of every training loader that has one in its checkpoints and hands
it back through ``load_state_dict()`` when a run resumes (``--ckpt_path``). ``ResumableLoader`` uses
this: its order is a pure function of (seed, epoch, rank) — a ``DistributedSampler``, which Lightning
keeps as it is and advances with ``set_epoch`` — and its state is the number of batches already
handed out in the current pass, which a resumed run skips on the index level (no data is loaded for
them). Together with per-step seeding in ``SearchModule``, a resumed run sees the same batches and
draws the same architectures as an uninterrupted one.

When a ``CombinedLoader`` cycles the shorter loader within an epoch (``max_size_cycle``), each pass
of it repeats the epoch's order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can start its next pass ``start`` indices in (for a resumed run)."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self.start = self.start, 0
        return iter(indices[start:])


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a ``ResumableSampler`` with ``state_dict``/``load_state_dict`` for Lightning.

    Args:
        dataset: the map-style data set.
        batch_size: examples per batch; incomplete last batches are dropped.
        num_replicas, rank: the process's share under DDP (1 and 0 otherwise).
        shuffle: shuffle per epoch (seeded by ``seed`` and the epoch).
        seed: the order's seed (default: the run seed, ``PL_GLOBAL_SEED``).
        num_workers: DataLoader worker processes.
    """

    sampler: ResumableSampler
    batch_size: int

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int | None = None,
        num_workers: int = 0,
    ):
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        sampler = ResumableSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )
        self.num_replicas, self.rank, self.shuffle, self.seed = num_replicas, rank, shuffle, seed
        self._yielded = 0
        self._resume_at = 0

    # torch annotates DataLoader.__iter__ with its private iterator class, which a wrapping generator is not
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self._yielded, self._resume_at = self._resume_at, 0
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self._resume_at = state["batches"]
        self.sampler.start = state["batches"] * self.batch_size
