"""The architecture the w-step trains the supernet weights on (paper Eq. 7), one small class each.

``SearchModule(w_step_arch=...)`` takes an instance, or its short name ``"discrete"``, ``"relaxed"``
or ``"softmax"`` (default settings). Each returns a detached architecture for the current phi.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor

from unas_lightning.distributions import Arch, ArchDistribution, check_temperature, detach, expand_rows


class WStepArch(ABC):
    """Chooses the architecture of one w-step from the logits phi."""

    @abstractmethod
    def __call__(self, logits: Mapping[str, Tensor], examples: int | None = None) -> Arch:
        """A detached architecture; with ``examples`` = B (per-example sampling) rows [B, ...]."""


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


#: the short names ``SearchModule(w_step_arch=...)`` accepts
W_STEP_ARCHS: dict[str, type[WStepArch]] = {
    "discrete": DiscreteSample,
    "relaxed": RelaxedSample,
    "softmax": SoftmaxMixture,
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
    return W_STEP_ARCHS[choice]()


def _rows(logits: Mapping[str, Tensor], examples: int | None) -> Mapping[str, Tensor]:
    return logits if examples is None else expand_rows(logits, examples)
