"""Weight-sharing diagnostics: does the supernet rank architectures as training them alone does?

A search follows the supernet: it prefers the architectures whose one-hot evaluation with the shared
weights w is good. That choice is only as good as the ranking those evaluations induce, compared with
the ranking by stand-alone accuracy (each architecture retrained from scratch). This module measures it:

* :func:`supernet_accuracy`: accuracy of the supernet at one architecture (a genotype), shared weights;
* :func:`kendall_tau` (tau-b, ties counted) and :func:`spearman_rho` (Pearson on average ranks);
* :func:`rank_agreement`: both correlations for a set of architectures, with the per-architecture
  figures, as a :class:`RankAgreement` (a JSON-ready record).

Values near 1 mean the supernet orders architectures as retraining does; near 0, a search on it picks at
random; negative, it prefers the worse ones (e.g. a supernet that favours parameter-free operations,
which train fastest under weight sharing).

Examples:
    >>> kendall_tau([1, 2, 3, 4], [1, 3, 2, 4])
    0.6666666666666666
    >>> spearman_rho([1, 2, 3, 4], [10, 20, 40, 30])
    0.8
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from unas_lightning.spaces.base import SearchSpace
from unas_lightning.spaces.genotype import Genotype


def _check_pair(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"rank correlation needs two sequences of the same length, got {len(x)} and {len(y)}.")
    if len(x) < 2:
        raise ValueError(f"rank correlation needs at least 2 items, got {len(x)}.")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x)(n0 - ties_y)) over all pairs.

    NaN when one of the sequences is constant.
    """
    _check_pair(x, y)
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                ties_x += 1
                ties_y += 1
            elif dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denom = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    return (concordant - discordant) / denom if denom else float("nan")


def _ranks(v: Sequence[float]) -> list[float]:
    """Ranks 1..n, tied values sharing their average rank."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks. NaN when one sequence is constant."""
    _check_pair(x, y)
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else float("nan")


@torch.no_grad()
def supernet_accuracy(
    space: SearchSpace, genotype: Genotype, batches: Iterable[tuple[Tensor, Tensor]], max_batches: int | None = None
) -> float:
    """Top-1 accuracy of the supernet at ``genotype``'s one-hot architecture, with its shared weights.

    Args:
        space: the supernet (its weights as the search left them).
        genotype: an architecture of this space (``space.arch_of`` checks that it fits).
        batches: (x, y) batches, e.g. a search-val loader.
        max_batches: stop after this many batches (None: all).
    """
    device = next(space.parameters()).device
    arch = {k: v.to(device) for k, v in space.arch_of(genotype).items()}
    was_training = space.training
    space.eval()
    correct = total = 0
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            correct += int((space(x, arch).argmax(-1) == y).sum())
            total += int(y.numel())
    finally:
        space.train(was_training)
    if total == 0:
        raise ValueError("supernet_accuracy got no batches.")
    return correct / total


@dataclass
class RankAgreement:
    """How the supernet's accuracies of some architectures agree in order with their stand-alone ones."""

    supernet: list[float]
    standalone: list[float]
    kendall_tau: float
    spearman_rho: float

    def to_dict(self) -> dict:
        return asdict(self)


def rank_agreement(supernet: Sequence[float], standalone: Sequence[float]) -> RankAgreement:
    """Kendall tau and Spearman rho between supernet and stand-alone accuracies of the same architectures.

    Examples:
        >>> r = rank_agreement([0.5, 0.6, 0.7], [0.80, 0.85, 0.83])
        >>> round(r.kendall_tau, 3), round(r.spearman_rho, 3)
        (0.333, 0.5)
    """
    return RankAgreement(
        supernet=list(supernet),
        standalone=list(standalone),
        kendall_tau=kendall_tau(supernet, standalone),
        spearman_rho=spearman_rho(supernet, standalone),
    )
