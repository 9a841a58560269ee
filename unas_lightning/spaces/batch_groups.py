"""Several forward passes in one: batch norm with per-group statistics.

A search step evaluates the supernet at several architectures on the same data (REBAR: the loss at
z, zeta and zeta~, each on the search-train and the search-val batch). On a small supernet the cost
of such a pass is mostly the Python overhead of its hundreds of operation calls, not arithmetic, so
concatenating the g evaluations along the batch and running the supernet once is much cheaper. It
computes the same function only if batch norm, which normalises with the statistics of its batch,
normalises each of the g chunks with its own statistics: ``GroupedBatchNorm2d`` does so inside
``batch_groups(g)`` (and is a plain ``BatchNorm2d`` outside).

Examples:
    >>> import torch
    >>> bn = GroupedBatchNorm2d(3, affine=False, track_running_stats=False)
    >>> a, b = torch.randn(4, 3, 5, 5), 10 + torch.randn(4, 3, 5, 5)
    >>> with batch_groups(2):
    ...     both = bn(torch.cat([a, b]))
    >>> torch.allclose(both, torch.cat([bn(a), bn(b)]), atol=1e-5)
    True
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_GROUPS: contextvars.ContextVar[int] = contextvars.ContextVar("unas_batch_groups", default=1)


@contextmanager
def batch_groups(groups: int) -> Iterator[None]:
    """Within this block, ``GroupedBatchNorm2d`` treats the batch as ``groups`` equal, independent chunks."""
    token = _GROUPS.set(int(groups))
    try:
        yield
    finally:
        _GROUPS.reset(token)


def current_groups() -> int:
    """The number of groups set by the innermost ``batch_groups`` block (1 outside)."""
    return _GROUPS.get()


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that normalises each chunk of ``batch_groups(g)`` with the chunk's own statistics.

    Only for batch statistics without running averages (``track_running_stats=False``, as in the
    DARTS search space): with running statistics the chunks would have to update them one after the
    other, so a grouped call is refused.
    """

    def forward(self, x: Tensor) -> Tensor:
        if _GROUPS.get() == 1:
            return super().forward(x)
        if self.track_running_stats:
            raise RuntimeError("batch_groups needs batch norm without running statistics (track_running_stats=False).")
        return batch_norm(x, self.weight, self.bias, self.eps)


def batch_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Batch norm with batch statistics (no running averages), per group inside ``batch_groups(g)``."""
    groups = _GROUPS.get()
    if groups == 1:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)
    n = x.shape[0]
    if n % groups:
        raise ValueError(f"a batch of {n} does not split into {groups} equal groups.")
    # one call per group on a view, then one copy: cheaper than folding the groups into channels,
    # which needs two layout-changing copies (measured 2-3x slower forward + backward, channels-last)
    parts = [F.batch_norm(chunk, None, None, weight, bias, True, 0.0, eps) for chunk in x.chunk(groups)]
    return torch.cat(parts)
