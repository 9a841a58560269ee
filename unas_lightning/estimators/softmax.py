"""DARTS relaxation (Liu et al. 2019): the loss at softmax(phi / tau)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from unas_lightning.distributions import Arch, one_hot_argmax
from unas_lightning.estimators.relaxation import Relaxation


class Softmax(Relaxation):
    """Deterministic continuous relaxation: gradient of L(softmax(phi / tau)).

    This is the DARTS architecture gradient. It is biased for E_{p_phi}[L(z)] (the relaxed network
    is not any sampled network) and needs a loss differentiable in the relaxed rows; it reports the
    argmax architecture. Cost: one relaxed evaluation of ``loss_fn`` per step.

    Args:
        temperature: tau of the softmax; DARTS uses 1.
    """

    def relax(self, logits: Mapping[str, Tensor]) -> tuple[Arch, Arch]:
        relaxed = {k: torch.softmax(v / self.temperature, dim=-1) for k, v in logits.items()}
        return relaxed, {k: one_hot_argmax(v.detach()) for k, v in logits.items()}
