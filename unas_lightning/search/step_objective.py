"""The search objective of one step, L(arch) with w held constant, in as few supernet passes as possible."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from unas_lightning.arch_loss import ArchLoss
from unas_lightning.distributions import Arch, expand_rows
from unas_lightning.search import objectives
from unas_lightning.spaces.base import ArchitecturePenalty, GroupedForward, SearchSpace
from unas_lightning.spaces.batch_groups import batch_groups
from unas_lightning.utils.held_constant import held_constant


class StepObjective(ArchLoss):
    """L(arch) = objective(L_train, L_val) on this step's batches, with the supernet weights held constant.

    It owns how a step's batches become losses. Calling it evaluates one architecture; ``many(archs)``
    evaluates several (REBAR's zeta and zeta~). When the space is a ``GroupedForward`` (its batch norms
    keep per-group statistics, e.g. ``DartsSpace``), every architecture x batch pair is one group of a
    single supernet pass, which computes exactly what separate passes compute at a fraction of their
    per-operation overhead (relaxed architectures run every operation anyway; several one-hot ones get a
    pass each, over both batches); otherwise the pairs run one after the other.

    With per-example architectures (rows [n, ...]) the values are per-example losses [n]; example b of
    the train batch and example b of the val batch share architecture b, and L_gen's gap is per example.
    With one shared architecture ``gen_gap`` says where L_gen takes its gap: ``"batch"``, between the
    batch means, |mean L_val - mean L_train| (the paper's Eq. 8 read literally), or ``"example"``, the
    mean over example pairs of |L_val,b - L_train,b| (the official code). ``relaxed()`` is the same
    objective on the first ``relaxed_examples`` examples (``SearchModule(cv_examples=...)``), what a
    control variate evaluates. ``logs()`` holds L_train, L_val and the objective, averaged over the
    evaluations at one-hot architectures (over the relaxed ones when there were none).

    Args:
        space: the supernet.
        batch: ``{"train": (x, y), "val": (x, y)}``.
        objective, gen_lambda: as in ``SearchModule`` (``objectives.py``).
        gen_gap: ``"batch"`` or ``"example"`` (above).
        penalty: weight of the space's ``architecture_penalty`` added to the objective (an
            ``ArchitecturePenalty`` space; ``SearchModule(alpha_loss=...)``).
        examples: use the first ``examples`` examples of each batch.
        weights: the parameters to hold constant (w in the phi-step: they get no gradient and no
            autograd graph is built for them); default ``space.weight_parameters()``.
        relaxed_examples: the examples of ``relaxed()`` (None: all of them).
    """

    def __init__(
        self,
        space: SearchSpace,
        batch: Mapping[str, tuple[Tensor, Tensor]],
        objective: str,
        gen_lambda: float,
        examples: int,
        weights: Sequence[Tensor] | None = None,
        relaxed_examples: int | None = None,
        gen_gap: str = "batch",
        penalty: float = 0.0,
    ):
        use_train, use_val = objectives.uses_batches(objective)
        self.parts = [name for name, used in (("train", use_train), ("val", use_val)) if used]
        self.batch = batch
        self.data = {name: tuple(t[:examples] for t in batch[name]) for name in self.parts}
        self.space = space
        self.weights = list(space.weight_parameters()) if weights is None else weights
        self.objective, self.gen_lambda, self.gen_gap = objective, gen_lambda, objectives.check_gap(gen_gap)
        if penalty and not isinstance(space, ArchitecturePenalty):
            raise ValueError(f"alpha_loss needs a space with an architecture penalty; {type(space).__name__} has none.")
        self.penalty = penalty
        self.n = examples
        self.relaxed_examples = relaxed_examples
        self.grouped = isinstance(space, GroupedForward)
        self._observed: dict[bool, list[dict[str, Tensor]]] = {True: [], False: []}  # by one-hot
        self._relaxed: StepObjective | None = None

    def __call__(self, arch: Arch) -> Tensor:
        return self.many([arch])[0]

    def many(self, archs: Sequence[Arch]) -> list[Tensor]:
        """The objective at each architecture, from one supernet pass when the space allows it."""
        hot = [_one_hot(a) for a in archs]
        if not self.grouped:
            losses = [[self._loss(arch, *self.data[p]) for p in self.parts] for arch in archs]
        elif len(archs) > 1 and any(hot):
            # one-hot architectures run only their chosen operations; sharing a pass would run the
            # union of every architecture's operations on every group: one pass per architecture
            losses = [self._grouped([arch])[0] for arch in archs]
        else:
            losses = self._grouped(archs)
        per_example = [self._per_example(a) for a in archs]
        values = [self._combine(*args) for args in zip(losses, hot, per_example, strict=True)]
        if self.penalty:
            space = cast(ArchitecturePenalty, self.space)  # a penalty weight needs one (SearchModule checks)
            values = [v + self.penalty * space.architecture_penalty(a) for v, a in zip(values, archs, strict=True)]
        return values

    def relaxed(self) -> StepObjective:
        """This objective on the first ``relaxed_examples`` examples (itself when that is all of them)."""
        if self.relaxed_examples is None or self.relaxed_examples >= self.n:
            return self
        if self._relaxed is None:
            self._relaxed = StepObjective(
                self.space,
                self.batch,
                self.objective,
                self.gen_lambda,
                self.relaxed_examples,
                self.weights,
                gen_gap=self.gen_gap,
                penalty=self.penalty,
            )
        return self._relaxed

    def variant(self, objective: str | None = None, hold_weights: bool = True) -> StepObjective:
        """This step's objective on the same batches with another ``objective`` (``"train"``, ``"val"``,
        ``"gen"``), or with w free (``hold_weights=False``: its gradient reaches w); what an estimator that
        differentiates through a virtual w-step needs (``estimators.DartsSecondOrder``)."""
        return StepObjective(
            self.space,
            self.batch,
            objective or self.objective,
            self.gen_lambda,
            self.n,
            self.weights if hold_weights else [],
            relaxed_examples=self.relaxed_examples,
            gen_gap=self.gen_gap,
            penalty=self.penalty,
        )

    def logs(self) -> dict[str, Tensor]:
        """L_train, L_val, L_<objective> (batch means) averaged over the one-hot evaluations so far."""
        seen = self._observed[True] or self._observed[False]
        if not seen:
            return {}
        return {k: torch.stack([p[k] for p in seen]).mean() for k in seen[0]}

    # -- evaluation ------------------------------------------------------------------------------
    def _per_example(self, arch: Arch) -> bool:
        return self.space.examples_in(arch) is not None

    def _loss(self, arch: Arch, x: Tensor, y: Tensor) -> Tensor:
        with held_constant(self.weights):
            logits = self.space(x, arch)
        return F.cross_entropy(logits, y, reduction="none")

    def _grouped(self, archs: Sequence[Arch]) -> list[list[Tensor]]:
        """One pass over [archs x parts] groups of n examples; per-example rows carry each group's arch."""
        groups = [(a, p) for a in archs for p in self.parts]
        x = torch.cat([self.data[p][0] for _, p in groups])
        y = torch.cat([self.data[p][1] for _, p in groups])
        if len(archs) == 1 and not self._per_example(archs[0]):
            rows = archs[0]  # one shared architecture: no per-example coefficients needed
        else:
            per_group = [a if self._per_example(a) else expand_rows(a, self.n) for a, _ in groups]
            rows = {k: torch.cat([a[k] for a in per_group]) for k in archs[0]}
        with batch_groups(len(groups)), held_constant(self.weights):
            logits = self.space(x, rows)
        per = F.cross_entropy(logits, y, reduction="none").view(len(groups), self.n)
        k = len(self.parts)
        return [[per[i + j] for j in range(k)] for i in range(0, len(groups), k)]

    def _combine(self, losses: list[Tensor], one_hot: bool, per_example: bool) -> Tensor:
        """The objective from the per-example losses [n] of each batch: per example, or one scalar."""
        if per_example or (self.objective == "gen" and self.gen_gap == "example"):
            named = dict(zip(self.parts, losses, strict=True))  # combined per example pair
        else:
            named = {name: loss.mean() for name, loss in zip(self.parts, losses, strict=True)}
        value = objectives.combine(self.objective, named.get("train"), named.get("val"), self.gen_lambda)
        value = value if per_example else value.mean()
        parts = {f"L_{name}": loss.detach().mean() for name, loss in named.items()}
        parts[f"L_{self.objective}"] = value.detach().mean()
        self._observed[one_hot].append(parts)
        return value


def _one_hot(arch: Arch) -> bool:
    first = next(iter(arch.values()))
    return bool(((first == 0) | (first == 1)).all())
