"""What the search does with a NaN/inf loss: skip the step on every rank, stop after a streak."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from lightning.pytorch.strategies import Strategy


class NonFiniteGuard:
    """Skips steps whose loss is NaN/inf on any rank and stops the search after too many in a row.

    A run of more than ``max_steps`` skipped steps of one kind raises ``FloatingPointError``: w and phi
    still hold their last good values, and so does every checkpoint written meanwhile.

    Args:
        max_steps: skipped steps in a row (per kind: "phi", "w") tolerated before the search stops.
    """

    def __init__(self, max_steps: int = 10):
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(f"max_nonfinite_steps must be an integer >= 0, got {max_steps!r}.")
        self.max_steps = max_steps
        self.streak = {"phi": 0, "w": 0}

    def finite(self, loss: Tensor, which: str, strategy: Strategy | None = None, where: str = "") -> bool:
        """True when ``loss`` is finite on every rank (``strategy``: Lightning's, to agree under DDP)."""
        ok = torch.isfinite(loss.detach()).all().float()
        # all ranks must agree, or DDP's all-reduce hangs (every Lightning strategy has a world_size, though
        # the base class does not declare it)
        if strategy is not None and strategy.world_size > 1:  # type: ignore[attr-defined]
            ok = strategy.reduce(ok, reduce_op="min")
        if bool(ok > 0):
            self.streak[which] = 0
            return True
        self.streak[which] += 1
        if self.streak[which] > self.max_steps:
            raise FloatingPointError(
                f"{self.streak[which]} {which}-steps in a row had a non-finite loss (NaN/inf); the "
                "search stops here with w and phi at their last good values (the last checkpoint is kept). "
                "Lower the learning rates or check the data."
            )
        warnings.warn(f"non-finite {which}-step loss {where}; step skipped.", stacklevel=3)
        return False
