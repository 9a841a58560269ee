"""DARTS relaxation (Liu et al. 2019): the loss at softmax(phi / tau)."""

from __future__ import annotations

import torch

from unas_lightning.distributions import check_temperature, one_hot_argmax
from unas_lightning.estimators.base import Estimator, EstimatorOutput, loss_vector


class Softmax(Estimator):
    """Deterministic continuous relaxation: gradient of L(softmax(phi / tau)).

    This is the DARTS architecture gradient. It is biased for E_{p_phi}[L(z)] (the relaxed network
    is not any sampled network) and needs a loss differentiable in the relaxed rows.
    Cost: one relaxed evaluation of ``loss_fn`` per step.

    Args:
        temperature: tau of the softmax; DARTS uses 1.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)

    def hparams(self):
        return {"temperature": self.temperature}

    def surrogate(self, logits, loss_fn):
        relaxed = {k: torch.softmax(v / self.temperature, dim=-1) for k, v in logits.items()}
        loss = loss_vector(loss_fn(relaxed), logits).mean()
        arch = {k: one_hot_argmax(v.detach()) for k, v in logits.items()}
        return EstimatorOutput(loss=loss, arch=arch, value=loss.detach())
