"""The search objective of one step, L(arch) with w frozen, evaluated as few supernet passes as possible."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unas_lightning import objectives
from unas_lightning.distributions import Arch
from unas_lightning.spaces.batch_groups import batch_groups


class StepObjective:
    """L(arch) = objective(L_train, L_val) on this step's batches, with the supernet weights held constant.

    Calling it evaluates one architecture; ``many(archs)`` evaluates several (REBAR's zeta and zeta~)
    and returns their values in order. Estimators use ``many`` when a loss function offers it. When the
    space supports ``batch_groups`` (its batch norms keep per-group statistics, e.g. ``DartsSpace``),
    every architecture x batch pair is one group of a single supernet pass, which computes exactly what
    separate passes compute at a fraction of their per-operation overhead (relaxed architectures run
    every operation anyway; several one-hot ones get a pass each, over both batches); otherwise the
    pairs run one after the other.

    With per-example architectures (rows [n, ...]) the values are per-example losses [n]; example b of
    the train batch and example b of the val batch share architecture b. Each evaluation stores its
    parts (L_train, L_val, the objective; batch means) in ``record[id(arch)]``.

    Args:
        space: the supernet (``forward(x, arch)``).
        weights: its parameters to hold constant (w in the phi-step: they get no gradient and no
            autograd graph is built for them); default ``space.weight_parameters()``.
        batch: ``{"train": (x, y), "val": (x, y)}``.
        objective, gen_lambda: as in ``SearchModule``.
        examples: use the first ``examples`` examples of each batch.
        record: where the parts of each evaluation go.
    """

    def __init__(
        self,
        space: nn.Module,
        batch: Mapping[str, tuple[Tensor, Tensor]],
        objective: str,
        gen_lambda: float,
        examples: int,
        record: dict | None = None,
        weights: Sequence[Tensor] | None = None,
    ):
        use_train, use_val = objectives.uses_batches(objective)
        self.parts = [name for name, used in (("train", use_train), ("val", use_val)) if used]
        self.data = {name: tuple(t[:examples] for t in batch[name]) for name in self.parts}
        self.space = space
        self.weights = list(space.weight_parameters()) if weights is None else weights
        self.objective, self.gen_lambda = objective, gen_lambda
        self.n = examples
        self.record = record if record is not None else {}
        self.grouped = bool(getattr(space, "supports_batch_groups", False))

    def __call__(self, arch: Arch) -> Tensor:
        return self.many([arch])[0]

    def many(self, archs: Sequence[Arch]) -> list[Tensor]:
        """The objective at each architecture, from one supernet pass when the space allows it."""
        if not self.grouped:
            losses = [[self._loss(arch, *self.data[p]) for p in self.parts] for arch in archs]
        elif len(archs) > 1 and any(_one_hot(a) for a in archs):
            # one-hot architectures run only their chosen operations; sharing a pass would run the
            # union of every architecture's operations on every group: one pass per architecture
            losses = [self._grouped([arch])[0] for arch in archs]
        else:
            losses = self._grouped(archs)
        return [self._combine(arch, parts) for arch, parts in zip(archs, losses, strict=True)]

    # -- evaluation ------------------------------------------------------------------------------
    def _per_example(self, arch: Arch) -> bool:
        return any(v.dim() > self.space.arch[k].dim() for k, v in arch.items())

    def _loss(self, arch: Arch, x: Tensor, y: Tensor) -> Tensor:
        with held_constant(self.weights):
            logits = self.space(x, arch)
        return F.cross_entropy(logits, y, reduction="none" if self._per_example(arch) else "mean")

    def _grouped(self, archs: Sequence[Arch]) -> list[list[Tensor]]:
        """One pass over [archs x parts] groups of n examples; per-example rows carry each group's arch."""
        groups = [(a, p) for a in archs for p in self.parts]
        x = torch.cat([self.data[p][0] for _, p in groups])
        y = torch.cat([self.data[p][1] for _, p in groups])
        if len(archs) == 1 and not self._per_example(archs[0]):
            rows = archs[0]  # one shared architecture: no per-example coefficients needed
        else:
            rows = {k: torch.cat([self._rows(a[k], self.space.arch[k].dim()) for a, _ in groups]) for k in archs[0]}
        with batch_groups(len(groups)), held_constant(self.weights):
            logits = self.space(x, rows)
        per = F.cross_entropy(logits, y, reduction="none").view(len(groups), self.n)
        out, i = [], 0
        for arch in archs:
            keep = self._per_example(arch)
            out.append([per[i + j] if keep else per[i + j].mean() for j in range(len(self.parts))])
            i += len(self.parts)
        return out

    def _rows(self, value: Tensor, base_dim: int) -> Tensor:
        """``value`` as n per-example rows (shared rows are expanded; per-example ones kept)."""
        return value if value.dim() > base_dim else value.expand(self.n, *value.shape)

    def _combine(self, arch: Arch, losses: list[Tensor]) -> Tensor:
        named = dict(zip(self.parts, losses, strict=True))
        l_train, l_val = named.get("train"), named.get("val")
        value = objectives.combine(self.objective, l_train, l_val, self.gen_lambda)
        parts = {f"L_{name}": loss.detach().mean() for name, loss in named.items()}
        parts[f"L_{self.objective}"] = value.detach().mean()
        self.record[id(arch)] = parts
        return value


@contextmanager
def held_constant(params: Iterable[Tensor]) -> Iterator[None]:
    """Within this block ``params`` do not require gradients: computations use them as constants.

    Cheaper than ``torch.func.functional_call`` with detached copies (which re-binds every
    parameter of a module tree of thousands of modules on each call) and equivalent for autograd.
    """
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _one_hot(arch: Arch) -> bool:
    first = next(iter(arch.values()))
    return bool(((first == 0) | (first == 1)).all())
