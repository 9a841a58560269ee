"""REINFORCE with a moving-average baseline (paper Eq. 1 and Eq. 2 with a constant c)."""

from __future__ import annotations

import torch

from unas_lightning.distributions import ArchDistribution
from unas_lightning.estimators.base import Estimator, EstimatorOutput, as_scalar


class Reinforce(Estimator):
    """Score-function estimator (L(z) - c) d/dphi log p_phi(z), z ~ p_phi.

    The baseline c is an exponential moving average of past losses; it is computed before the
    current sample is seen, so it is constant given z and the estimate stays unbiased (Eq. 2 with
    d/dphi E[c] = 0). ``loss_fn`` is evaluated once, at the one-hot z, without gradient, so it may be
    any black box (a table lookup, a measured latency). Cost: one discrete evaluation per step.

    Args:
        baseline_decay: EMA decay of the baseline in [0, 1); 0 keeps only the last loss.
        use_baseline: set False for the plain Eq. 1 estimator.
    """

    needs_differentiable_loss = False

    def __init__(self, baseline_decay: float = 0.9, use_baseline: bool = True):
        super().__init__()
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must lie in [0, 1), got {baseline_decay}.")
        self.baseline_decay = float(baseline_decay)
        self.use_baseline = bool(use_baseline)
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))

    def hparams(self):
        return {"baseline_decay": self.baseline_decay, "use_baseline": self.use_baseline}

    @torch.no_grad()
    def _update_baseline(self, value: torch.Tensor) -> None:
        value = value.to(self.baseline)
        if bool(self.baseline_ready):
            self.baseline.lerp_(value, 1.0 - self.baseline_decay)
        else:
            self.baseline.copy_(value)
            self.baseline_ready.fill_(True)

    def surrogate(self, logits, loss_fn):
        dist = ArchDistribution(logits)
        z = dist.sample()
        with torch.no_grad():
            value = as_scalar(loss_fn(z)).detach()
        c = self.baseline.clone() if self.use_baseline and bool(self.baseline_ready) else 0.0
        loss = (value - c) * dist.log_prob(z)
        if self.use_baseline:
            self._update_baseline(value)
        return EstimatorOutput(loss=loss, arch=z, value=value)
