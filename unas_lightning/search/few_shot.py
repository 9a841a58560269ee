"""Few-shot supernets (Zhao et al. 2021): the trained supernet split on one choice into sub-supernets.

One supernet shares every weight among all architectures; architectures that differ on a choice then
compete for the same weights, which blurs their ranking. A few-shot supernet splits the space on one
choice (a row of phi, e.g. one edge of a NAS-Bench-201 cell): one copy of the trained supernet per
candidate of that row, each with that candidate fixed, each trained further on its own architectures
only. An architecture is then evaluated by the sub-supernet of its candidate. With K candidates the
split costs what the fine-tuning of K sub-supernets costs (the paper trains each as long as the one-shot
supernet; ``benchmarks/ranking.py`` splits one budget among them).

A sub-supernet is an ordinary space whose phi row is fixed: its logits are 0 for the chosen candidate
and ``-inf``-like for the others, so ``SearchModule``'s w-step (and any ``ArchDistribution``) only ever
draws that candidate there. Train it like any supernet (``SearchModule(sub, warmup_epochs=...)``).

Examples:
    >>> from unas_lightning.spaces import NB201Space
    >>> space = NB201Space(in_channels=1, num_classes=10, channels=4, cells_per_stage=1)
    >>> subs = split_supernet(space, "cell", row=0)
    >>> len(subs), [int(s.distribution().sample()["cell"][0].argmax()) for s in subs]
    (5, [0, 1, 2, 3, 4])
    >>> candidate_of(space, space.genotype(subs[3].distribution().sample()), "cell", row=0)
    3
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

import torch

from unas_lightning.spaces.base import SearchSpace
from unas_lightning.spaces.genotype import Genotype

#: the logit of a candidate a sub-supernet never draws (softmax gives it exactly 0 in float32)
EXCLUDED = -1e4

SpaceT = TypeVar("SpaceT", bound=SearchSpace)


def split_supernet(space: SpaceT, key: str, row: int) -> list[SpaceT]:
    """One copy of ``space`` per candidate of phi[``key``][``row``], that candidate fixed; weights copied.

    Args:
        space: the trained (one-shot) supernet; left unchanged.
        key: the phi entry to split on (``space.arch`` keys, e.g. ``"cell"`` for NAS-Bench-201).
        row: the row of that entry (an edge): its candidates become the sub-supernets.
    """
    if key not in space.arch:
        raise ValueError(f"split_supernet: the space has no phi entry {key!r}; it has {sorted(space.arch)}.")
    logits = space.arch[key]
    if logits.dim() != 2 or not 0 <= row < logits.shape[0]:
        raise ValueError(f"split_supernet: row must index phi[{key!r}] of shape {tuple(logits.shape)}, got {row}.")
    subs = []
    for j in range(logits.shape[1]):
        sub = copy.deepcopy(space)
        with torch.no_grad():
            fixed = torch.full_like(sub.arch[key][row], EXCLUDED)
            fixed[j] = 0.0
            sub.arch[key][row] = fixed
        subs.append(sub)
    return subs


def candidate_of(space: SearchSpace, genotype: Genotype, key: str, row: int) -> int:
    """The candidate ``genotype`` takes at phi[``key``][``row``]: the index of its sub-supernet."""
    return int(space.arch_of(genotype)[key][row].argmax())


def pick(subs: Sequence[SpaceT], genotype: Genotype, key: str, row: int) -> SpaceT:
    """The sub-supernet of ``split_supernet(space, key, row)`` that evaluates ``genotype``."""
    return subs[candidate_of(subs[0], genotype, key, row)]
