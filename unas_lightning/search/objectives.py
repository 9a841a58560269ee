"""Search objectives of paper Sec. 3.2: L_train, L_val (Eq. 6) and L_gen (Eq. 8).

L_gen(z, w) = L_train(z, w) + lambda |L_val(z, w) - L_train(z, w)| penalises the generalization gap of
an architecture: both losses are computed with the same architecture z (one-hot or relaxed) on one
search-train and one search-val batch. The paper uses lambda = 0.5. Where the gap is taken is an option
(``GAPS``): between the two batch means (Eq. 8 as printed) or per example pair, averaged (the official
code: example b of the train batch is paired with example b of the val batch).
"""

from __future__ import annotations

from typing import Literal, cast

from torch import Tensor

Objective = Literal["train", "val", "gen"]
OBJECTIVES: tuple[str, ...] = ("train", "val", "gen")
#: where L_gen takes its gap with one shared architecture: between batch means, or per example pair
GAPS: tuple[str, ...] = ("batch", "example")


def generalization_loss(l_train: Tensor, l_val: Tensor, lam: float = 0.5) -> Tensor:
    """L_gen = L_train + lam * |L_val - L_train| (Eq. 8)."""
    return l_train + lam * (l_val - l_train).abs()


def check_objective(objective: str, lam: float) -> None:
    """Stop early on an unknown objective name or a negative lambda."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}.")
    if not lam >= 0:
        raise ValueError(f"gen_lambda must be >= 0, got {lam}; the paper uses 0.5.")


def check_gap(gap: str) -> str:
    """``gap`` itself, or a ``ValueError`` naming the choices."""
    if gap not in GAPS:
        raise ValueError(f"gen_gap must be one of {list(GAPS)}, got {gap!r}.")
    return gap


def uses_batches(objective: str) -> tuple[bool, bool]:
    """(needs the search-train batch, needs the search-val batch) for an objective."""
    return objective in ("train", "gen"), objective in ("val", "gen")


def combine(objective: str, l_train: Tensor | None, l_val: Tensor | None, lam: float) -> Tensor:
    """The objective's value from the per-batch cross-entropies it needs."""
    # the losses an objective needs are given (``uses_batches``)
    if objective == "train":
        return cast(Tensor, l_train)
    if objective == "val":
        return cast(Tensor, l_val)
    return generalization_loss(cast(Tensor, l_train), cast(Tensor, l_val), lam)
