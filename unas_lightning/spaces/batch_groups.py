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


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that normalises each chunk of ``batch_groups(g)`` with the chunk's own statistics.

    Only for batch statistics without running averages (``track_running_stats=False``, as in the
    DARTS search space): with running statistics the chunks would have to update them one after the
    other, so a grouped call is refused.
    """

    def forward(self, x: Tensor) -> Tensor:
        groups = _GROUPS.get()
        if groups == 1:
            return super().forward(x)
        if self.track_running_stats:
            raise RuntimeError("batch_groups needs batch norm without running statistics (track_running_stats=False).")
        n, c, h, w = x.shape
        if n % groups:
            raise ValueError(f"a batch of {n} does not split into {groups} equal groups.")
        # [g*b, C, H, W] -> [b, g*C, H, W]: one batch_norm call, one set of statistics per (group, channel)
        folded = x.reshape(groups, n // groups, c, h, w).transpose(0, 1).reshape(n // groups, groups * c, h, w)
        weight = self.weight.repeat(groups) if self.weight is not None else None
        bias = self.bias.repeat(groups) if self.bias is not None else None
        y = F.batch_norm(folded, None, None, weight, bias, True, 0.0, self.eps)
        return y.reshape(n // groups, groups, c, h, w).transpose(0, 1).reshape(n, c, h, w)
