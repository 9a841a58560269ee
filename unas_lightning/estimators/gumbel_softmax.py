"""Gumbel-softmax / concrete relaxation, as used by SNAS (paper Sec. 2)."""

from __future__ import annotations

from unas_lightning.distributions import ArchDistribution, check_temperature
from unas_lightning.estimators.base import Estimator, EstimatorOutput, loss_vector


class GumbelSoftmax(Estimator):
    """Reparameterized relaxed sample: gradient of L(zeta), zeta = softmax((log p_phi + G) / tau).

    SNAS optimizes E_{p_phi(zeta)}[L(zeta)] instead of E_{p_phi(z)}[L(z)]; this is term (iii) of
    Eq. 3 alone and therefore biased for the discrete objective. Cost: one relaxed evaluation.

    Args:
        temperature: tau of the relaxation.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)

    def hparams(self):
        return {"temperature": self.temperature}

    def surrogate(self, logits, loss_fn):
        s = ArchDistribution(logits).rsample(self.temperature)
        loss = loss_vector(loss_fn(s.zeta), logits).mean()
        return EstimatorOutput(loss=loss, arch=s.z, value=loss.detach())
