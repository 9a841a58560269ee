"""The architecture the w-step trains the supernet weights on (paper Eq. 7), one small class each.

``SearchModule(w_step_arch=...)`` (and ``warmup_w_step_arch=...``, the warm-up's) takes an instance, or its
short name ``"discrete"``, ``"relaxed"``, ``"softmax"``, ``"fair"``, ``"path_dropout"`` or, in the
NAS-Bench-201 space, ``"deisomorphic"`` (``search.deisomorphic``; default settings). Each returns
detached architectures for the current phi: one per w-step, or several whose gradients one w update
averages (``paths``, e.g. FairNAS's strict fairness).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor

from unas_lightning.distributions import Arch, ArchDistribution, check_temperature, detach, expand_rows
from unas_lightning.utils.imports import import_dotted


class WStepArch(ABC):
    """Chooses the architecture of one w-step from the logits phi."""

    @abstractmethod
    def __call__(self, logits: Mapping[str, Tensor], examples: int | None = None) -> Arch:
        """A detached architecture; with ``examples`` = B (per-example sampling) rows [B, ...]."""

    def paths(self, logits: Mapping[str, Tensor], examples: int | None = None) -> list[Arch]:
        """The architectures of one w update: their losses are averaged, one optimizer step follows.

        One by default (``self(logits, examples)``); a subclass that trains several paths per update
        (FairNAS's strict fairness below, or a sandwich rule of one's own) returns them all. The
        NAS-Bench-201 operations have no largest-to-smallest order (a sandwich needs nested ones, as in
        slimmable networks), so no sandwich rule is built in.
        """
        return [self(logits, examples)]


class DiscreteSample(WStepArch):
    """A one-hot z ~ p_phi (the paper's Eq. 7): only the chosen operations run and are trained."""

    def __call__(self, logits: Mapping[str, Tensor], examples: int | None = None) -> Arch:
        with torch.no_grad():
            return ArchDistribution(_rows(logits, examples)).sample()


class RelaxedSample(WStepArch):
    """The Gumbel-softmax relaxation zeta of a sample (the official UNAS code, SNAS): every operation
    runs, mixed with zeta's weights.

    Args:
        temperature: tau of zeta (the official UNAS code: 0.4).
    """

    def __init__(self, temperature: float = 1.0):
        self.temperature = check_temperature(temperature)

    def __call__(self, logits: Mapping[str, Tensor], examples: int | None = None) -> Arch:
        with torch.no_grad():
            return detach(ArchDistribution(_rows(logits, examples)).rsample(self.temperature).zeta)


class SoftmaxMixture(WStepArch):
    """The deterministic mixture softmax(phi) of DARTS (the same for every example)."""

    def __call__(self, logits: Mapping[str, Tensor], examples: int | None = None) -> Arch:
        return {k: torch.softmax(v.detach(), -1) for k, v in logits.items()}


class FairSample(WStepArch):
    """FairNAS's strict fairness (Chu et al. 2021): K paths per w update, K the largest number of candidates.

    Every row (edge) runs a fresh random permutation of its K candidates, so within one update every
    candidate of every row is trained exactly once, on the same batch, and their gradients are averaged
    into one step (FairNAS sums them; with Adam only the scale differs): no operation gets ahead of
    another by being drawn more often, the bias the FairNAS paper blames for poor supernet rankings.
    phi is ignored (every permutation is uniform), so this is a warm-up choice
    (``SearchModule(warmup_w_step_arch="fair")``); a w update costs K forward-backward passes.
    """

    def __call__(self, logits: Mapping[str, Tensor], examples: int | None = None) -> Arch:
        return self.paths(logits, examples)[0]

    def paths(self, logits: Mapping[str, Tensor], examples: int | None = None) -> list[Arch]:
        rows = _rows(logits, examples)
        k = max(v.shape[-1] for v in rows.values())
        picks = {}
        for key, v in rows.items():
            n, j = v[..., 0].numel(), v.shape[-1]  # rows (times examples), candidates
            order = torch.stack([torch.randperm(k) % j for _ in range(n)], 1)  # [k, n]: path i takes order[i]
            picks[key] = torch.nn.functional.one_hot(order, j).to(v.device, v.dtype).reshape(k, *v.shape)
        return [{key: p[i] for key, p in picks.items()} for i in range(k)]


class PathDropout(WStepArch):
    """Every candidate at once, each dropped independently with probability ``drop`` (Bender et al. 2018).

    The kept candidates of a row are summed with weight 1 (a multi-hot row); a row that would lose every
    candidate keeps one drawn from p_phi. phi only enters through that fallback, so this too is a
    warm-up choice. Costs up to every candidate's forward per update, like ``"softmax"``.

    Args:
        drop: the probability of dropping a candidate, in [0, 1) (Bender et al.: rising to about 0.5).
    """

    def __init__(self, drop: float = 0.5):
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"PathDropout: drop must lie in [0, 1), got {drop}.")
        self.drop = float(drop)

    def __call__(self, logits: Mapping[str, Tensor], examples: int | None = None) -> Arch:
        with torch.no_grad():
            rows = _rows(logits, examples)
            fallback = ArchDistribution(rows).sample()
            out = {}
            for key, v in rows.items():
                keep = (torch.rand(v.shape, device=v.device) >= self.drop).to(v.dtype)
                empty = keep.sum(-1, keepdim=True) == 0
                out[key] = torch.where(empty, fallback[key], keep)
            return out


#: the short names ``SearchModule(w_step_arch=...)`` accepts: a class, or the dotted path of a class that
#: lives with its search space (imported when named)
W_STEP_ARCHS: dict[str, type[WStepArch] | str] = {
    "discrete": DiscreteSample,
    "relaxed": RelaxedSample,
    "softmax": SoftmaxMixture,
    "fair": FairSample,
    "path_dropout": PathDropout,
    "deisomorphic": "unas_lightning.search.deisomorphic.DeIsomorphicSample",
}


def resolve_w_step_arch(choice: WStepArch | str) -> WStepArch:
    """An instance from an instance or a short name; ``ValueError`` naming the choices otherwise."""
    if isinstance(choice, WStepArch):
        return choice
    if choice not in W_STEP_ARCHS:
        raise ValueError(
            f"w_step_arch must be one of {sorted(W_STEP_ARCHS)} or a unas_lightning.search.w_step.WStepArch, "
            f"got {choice!r}."
        )
    chosen = W_STEP_ARCHS[choice]
    return (import_dotted(chosen) if isinstance(chosen, str) else chosen)()


def _rows(logits: Mapping[str, Tensor], examples: int | None) -> Mapping[str, Tensor]:
    return logits if examples is None else expand_rows(logits, examples)
