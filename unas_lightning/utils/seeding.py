"""Per-step seeds: every step's random draws are a function of (run seed, epoch, batch, rank).

So a search resumed from a mid-epoch checkpoint draws exactly what the uninterrupted run drew (data
loaders, latency timing and callbacks may use the global random state freely in between), and DDP ranks
draw independent samples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from lightning.pytorch.strategies import Strategy


def run_seed(strategy: Strategy) -> int:
    """``seed_everything``'s seed, else a random one; the same on every rank (rank 0's)."""
    given = os.environ.get("PL_GLOBAL_SEED")
    seed = int(given) if given is not None else int(torch.randint(0, 2**31 - 1, ()))
    return int(strategy.broadcast(seed, src=0))


def step_seed(run: int, epoch: int, batch_idx: int, rank: int) -> int:
    """The seed of one training step's draws."""
    return int(np.random.SeedSequence([run, epoch, batch_idx, rank]).generate_state(1)[0])


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Within this block torch's random state (CPU and ``device``) starts from ``seed``; restored afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield
