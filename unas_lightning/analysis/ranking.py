"""Weight-sharing diagnostics: does the supernet rank architectures as training them alone does?

A search follows the supernet: it prefers the architectures whose one-hot evaluation with the shared
weights w is good. That choice is only as good as the ranking those evaluations induce, compared with
the ranking by stand-alone accuracy (each architecture retrained from scratch). This module measures it:

* :func:`supernet_accuracy`: accuracy of the supernet at one architecture (a genotype), shared weights,
  with the batch norms' statistics of each batch or re-estimated for the architecture
  (:func:`running_statistics`);
* :func:`kendall_tau` (tau-b, ties counted) and :func:`spearman_rho` (Pearson on average ranks), the
  torchmetrics functions with this module's contract (plain floats, NaN for a constant sequence);
* :func:`top_indices`: which items are "the top 20%" (at least 5), the one definition every top-20% figure
  of the project uses;
* :func:`ranking_report`: the figures that matter to a search (tau over all and over the top 20%,
  top-k overlap);
* :func:`rank_agreement`: both correlations for a set of architectures, with the per-architecture
  figures, as a :class:`RankAgreement` (a JSON-ready record);
* :func:`rank_average`: one score from several rankers (e.g. the supernet's accuracy and a zero-cost
  proxy such as the parameter count), a weighted mean of their normalised ranks;
* :func:`with_count_report`: the :func:`ranking_report` figures of the supernet's accuracy and the
  parameter count ranked together (``SUPERNET_COUNT_WEIGHTS``), each named with a ``_with_count`` suffix.

Values near 1 mean the supernet orders architectures as retraining does; near 0, a search on it picks at
random; negative, it prefers the worse ones (e.g. a supernet that favours parameter-free operations,
which train fastest under weight sharing).

Examples:
    >>> round(kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]), 4)  # torchmetrics computes it in float32
    0.6667
    >>> round(spearman_rho([1, 2, 3, 4], [10, 20, 40, 30]), 4)
    0.8
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef

from unas_lightning.spaces.base import SearchSpace
from unas_lightning.spaces.genotype import Genotype


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[Tensor, Tensor] | None:
    """Both sequences as float64 tensors, or None when one of them is constant (no ranking to compare)."""
    if len(x) != len(y):
        raise ValueError(f"rank correlation needs two sequences of the same length, got {len(x)} and {len(y)}.")
    if len(x) < 2:
        raise ValueError(f"rank correlation needs at least 2 items, got {len(x)}.")
    tx, ty = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if bool((tx == tx[0]).all()) or bool((ty == ty[0]).all()):
        return None
    return tx, ty


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties_x)(n0 - ties_y)) over all pairs.

    torchmetrics' ``kendall_rank_corrcoef`` (variant b) computes it; NaN when one sequence is constant.
    """
    pair = _pair(x, y)
    if pair is None:
        return float("nan")
    tau = kendall_rank_corrcoef(*pair, variant="b")  # a tuple only when asked for a test (t_test=True)
    assert isinstance(tau, Tensor)
    return float(tau)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (torchmetrics' ``spearman_corrcoef``).

    NaN when one sequence is constant (torchmetrics would say 0 there, which reads as "no agreement").
    """
    pair = _pair(x, y)
    return float("nan") if pair is None else float(spearman_corrcoef(*pair))


#: the rank-average weights (supernet accuracy, parameter count) that rank FMNIST-201 best of 3:1, 1:1 and 1:3:
#: better than the count alone and than the supernet alone in each of ten supernets measured
#: (docs/results/ranking.md, "Supernet and count together")
SUPERNET_COUNT_WEIGHTS = (1.0, 3.0)


def rank_average(scores: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """A weighted mean of several rankers' normalised ranks: one score per item, higher is better.

    Each ranker's scores (higher better) become average ranks scaled to [0, 1] (0 the worst item, ties
    share their mean rank), so rankers on different scales (an accuracy in %, a parameter count) weigh
    only by ``weights`` (any non-negative numbers, not all zero; normalised to sum 1). The supernet's
    accuracy and the parameter count carry different information about a cell (on FMNIST-201 they agree
    at Kendall tau 0.13), and their rank average ranks better than either (docs/results/ranking.md).

    Examples:
        >>> rank_average([[0.1, 0.3, 0.2], [5, 1, 9]], weights=[1, 1])
        [0.25, 0.5, 0.75]
        >>> rank_average([[0.1, 0.3, 0.2], [5, 1, 9]], weights=[1, 0])  # the first ranker alone
        [0.0, 1.0, 0.5]
    """
    if len(scores) != len(weights) or not scores:
        raise ValueError(
            f"rank_average needs one weight per ranker, got {len(scores)} rankers, {len(weights)} weights."
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"rank_average needs non-negative weights that are not all zero, got {list(weights)}.")
    n = len(scores[0])
    if n < 2 or any(len(s) != n for s in scores):
        raise ValueError(
            f"rank_average needs at least 2 items, the same for every ranker, got {[len(s) for s in scores]}."
        )
    total = [0.0] * n
    for values, weight in zip(scores, weights, strict=True):
        order = sorted(range(n), key=lambda i: values[i])
        ranks = [0.0] * n
        start = 0
        while start < n:  # a run of tied values shares the mean of its positions
            end = start
            while end + 1 < n and values[order[end + 1]] == values[order[start]]:
                end += 1
            for j in range(start, end + 1):
                ranks[order[j]] = (start + end) / 2 / (n - 1)
            start = end + 1
        total = [t + weight * r for t, r in zip(total, ranks, strict=True)]
    return [t / sum(weights) for t in total]


@contextmanager
def running_statistics(
    space: SearchSpace, arch: Mapping[str, Tensor], batches: Iterable[tuple[Tensor, Tensor]]
) -> Iterator[None]:
    """Within this block the supernet's batch norms use statistics re-estimated at ``arch`` on ``batches``.

    A supernet's batch norms normalise with the statistics of the batch in front of them (no running
    averages: the statistics of one path would not fit another). Single-path one-shot NAS (Guo et al.,
    2020) evaluates an architecture instead with population statistics re-estimated for it: every batch
    norm that keeps no running averages gets them for the block, as the plain mean of the per-batch
    statistics of ``batches`` forwarded at ``arch`` (``momentum=None``), and normalises with them in
    eval mode. On leaving, the batch norms are as they were (batch statistics, no buffers).

    Examples:
        >>> import torch
        >>> from unas_lightning.spaces import NB201Space
        >>> space = NB201Space(in_channels=1, num_classes=10, channels=4, cells_per_stage=1)
        >>> arch = {k: torch.nn.functional.one_hot(torch.zeros(len(v), dtype=torch.long), v.shape[1]).float()
        ...         for k, v in space.arch.items()}
        >>> data = [(torch.randn(8, 1, 16, 16), torch.zeros(8, dtype=torch.long))] * 2
        >>> with running_statistics(space, arch, data):
        ...     space.eval()(data[0][0], arch).shape
        torch.Size([8, 10])
    """
    norms = [m for m in space.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats]
    saved = [(m.momentum, m.training) for m in norms]
    was_training = space.training
    device = next(space.parameters()).device
    try:
        for m in norms:
            m.track_running_stats, m.momentum = True, None
            m.register_buffer("running_mean", torch.zeros(m.num_features, device=device))
            m.register_buffer("running_var", torch.ones(m.num_features, device=device))
            m.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        space.train()
        with torch.no_grad():
            seen = 0
            for x, _ in batches:
                space(x.to(device), arch)
                seen += 1
        if seen == 0:
            raise ValueError("running_statistics got no batches to estimate the statistics on.")
        space.eval()
        yield
    finally:
        for m, (momentum, training) in zip(norms, saved, strict=True):
            m.track_running_stats, m.momentum = False, momentum
            m.running_mean = m.running_var = m.num_batches_tracked = None
            m.train(training)
        space.train(was_training)


@torch.no_grad()
def supernet_accuracy(
    space: SearchSpace,
    genotype: Genotype,
    batches: Iterable[tuple[Tensor, Tensor]],
    max_batches: int | None = None,
    calibration: Iterable[tuple[Tensor, Tensor]] | None = None,
) -> float:
    """Top-1 accuracy of the supernet at ``genotype``'s one-hot architecture, with its shared weights.

    Args:
        space: the supernet (its weights as the search left them).
        genotype: an architecture of this space (``space.arch_of`` checks that it fits).
        batches: (x, y) batches, e.g. a search-val loader.
        max_batches: stop after this many batches (None: all).
        calibration: batches to re-estimate the batch norms' statistics on at this architecture
            (:func:`running_statistics`) before evaluating with them; None: each evaluation batch is
            normalised with its own statistics.
    """
    device = next(space.parameters()).device
    arch = {k: v.to(device) for k, v in space.arch_of(genotype).items()}
    was_training = space.training
    space.eval()
    correct = total = 0
    with running_statistics(space, arch, calibration) if calibration is not None else nullcontext():
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


def top_indices(values: Sequence[float], fraction: float = 0.2, minimum: int = 5) -> list[int]:
    """Indices of the largest ``fraction`` of ``values`` (rounded up, at least ``minimum``), best first.

    The top 20% of a ranking is where a search ends, so its agreement is reported apart: the supernet
    against the ground truth (:func:`ranking_report`) and one training seed against another (the
    FMNIST-201 table's reliability) both select their top cells with this function.

    Examples:
        >>> top_indices([3, 9, 1, 7, 5, 8, 2, 6, 4, 0], fraction=0.2, minimum=1)
        [1, 5]
    """
    if not 0 < fraction <= 1 or minimum < 1:
        raise ValueError(f"top_indices needs 0 < fraction <= 1 and minimum >= 1, got {fraction}, {minimum}.")
    order = sorted(range(len(values)), key=lambda i: -values[i])
    return order[: max(minimum, math.ceil(fraction * len(values)))]


def ranking_report(
    supernet: Sequence[float], truth: Sequence[float], top_k: int = 10, top_fraction: float = 0.1
) -> dict[str, float]:
    """How well supernet accuracies rank architectures whose true (stand-alone) accuracies are known.

    Returns ``kendall_tau`` and ``spearman_rho`` over all of them; ``kendall_tau_top20``, the Kendall tau
    over the truly best 20% (at least 5), where a search ends; ``top_k_overlap``, how many of the
    supernet's ``top_k`` best are among the truly best ``top_fraction`` (at least one); and ``cells``.

    Examples:
        >>> r = ranking_report([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [60, 70, 65, 80, 90, 85], top_k=2, top_fraction=0.34)
        >>> r["top_k_overlap"], round(r["kendall_tau"], 3)
        (2.0, 0.733)
    """
    if not 0 < top_fraction <= 1 or top_k < 1:
        raise ValueError(f"ranking_report needs top_k >= 1 and 0 < top_fraction <= 1, got {top_k}, {top_fraction}.")
    n = len(truth)
    best = top_indices(truth)
    truly_best = set(top_indices(truth, top_fraction, minimum=1))
    picked = sorted(range(n), key=lambda i: -supernet[i])[:top_k]
    return {
        "cells": float(n),
        "kendall_tau": kendall_tau(supernet, truth),
        "spearman_rho": spearman_rho(supernet, truth),
        "kendall_tau_top20": kendall_tau([supernet[i] for i in best], [truth[i] for i in best]),
        "top_k_overlap": float(len(truly_best.intersection(picked))),
    }


def with_count_report(
    supernet: Sequence[float],
    params: Sequence[float],
    truth: Sequence[float],
    top_k: int = 10,
    weights: Sequence[float] = SUPERNET_COUNT_WEIGHTS,
) -> dict[str, float]:
    """:func:`ranking_report` of the supernet's accuracy and the parameter count ranked together.

    One ranker from two (:func:`rank_average` with ``weights``, supernet first): Kendall tau over all and
    over the top 20% and the top-k overlap, each named with a ``_with_count`` suffix (the names
    ``RankingMonitor`` logs under ``ranking/`` and the ranking study tabulates).

    Examples:
        >>> r = with_count_report([0.3, 0.1, 0.2, 0.4], [1.0, 2.0, 3.0, 4.0], [60, 70, 80, 90], top_k=1)
        >>> sorted(r), r["kendall_tau_with_count"]
        (['kendall_tau_top20_with_count', 'kendall_tau_with_count', 'top_k_overlap_with_count'], 1.0)
    """
    report = ranking_report(rank_average([supernet, params], weights), truth, top_k=top_k)
    return {f"{k}_with_count": report[k] for k in ("kendall_tau", "kendall_tau_top20", "top_k_overlap")}
