"""Which candidate operations a supernet forward must compute, and how to scale each one.

A supernet mixes candidates with coefficients: a one-hot row selects one candidate (run only that
one, unscaled), a relaxed row mixes all of them. :func:`plan` decides this for every coefficient of
every mixture in one host synchronisation per forward pass, so that a one-hot forward costs what the
chosen network costs and never multiplies by an exact 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# (j, coef): compute candidate j and scale it by coef; None: the coefficient is exactly 1 everywhere.
Term = tuple[int, Tensor | None]


@dataclass
class Mixture:
    """The plan of one mixture: its terms, and whether every coefficient is non-zero (``dense``)."""

    terms: list[Term]
    dense: bool


def plan(coefficients: Sequence[Tensor]) -> list[Mixture]:
    """The terms of each mixture of candidates.

    Args:
        coefficients: per mixture, its coefficients [..., J]: J candidates; leading dimensions are
            examples (per-example architectures, then each kept coefficient is returned as [B, 1, 1, 1]
            to scale a batch of feature maps) or absent (a shared architecture, scalar coefficients).

    A candidate is kept when its coefficient is non-zero for some example; its coefficient is None when
    it is the constant 1 for every example and carries no gradient.

    Examples:
        >>> import torch
        >>> [m.terms for m in plan([torch.tensor([0.0, 1.0, 0.0])])]
        [[(1, None)]]
        >>> mix = plan([torch.tensor([0.25, 0.75])])[0]
        >>> mix.dense, [(j, float(c)) for j, c in mix.terms]
        (True, [(0, 0.25), (1, 0.75)])
    """
    flat = [c.detach().reshape(-1, c.shape[-1]) for c in coefficients]
    if not flat:
        return []
    flags = torch.cat([torch.cat([(f != 0).any(0), (f == 1).all(0)]) for f in flat]).tolist()
    out, pos = [], 0
    for coef, f in zip(coefficients, flat, strict=True):
        j_count = f.shape[1]
        nonzero, all_one = flags[pos : pos + j_count], flags[pos + j_count : pos + 2 * j_count]
        pos += 2 * j_count
        terms: list[Term] = []
        for j in range(j_count):
            if not nonzero[j]:
                continue
            if all_one[j] and not coef.requires_grad:
                terms.append((j, None))
                continue
            c = coef[..., j]
            terms.append((j, c.reshape(-1, 1, 1, 1) if c.dim() > 0 else c))
        out.append(Mixture(terms=terms, dense=all(nonzero)))
    return out
