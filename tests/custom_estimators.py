"""A user's own estimator, living outside the package (selected by class_path in tests)."""

from __future__ import annotations

from unas_lightning.distributions import ArchDistribution, check_temperature
from unas_lightning.estimators import Estimator, EstimatorOutput


class StraightThroughGumbel(Estimator):
    """Straight-through Gumbel-softmax: one-hot forward, relaxed backward (biased)."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)

    def surrogate(self, logits, loss_fn):
        s = ArchDistribution(logits).rsample(self.temperature)
        hard = {k: s.z[k] - s.zeta[k].detach() + s.zeta[k] for k in s.z}
        loss = loss_fn(hard)
        return EstimatorOutput(loss=loss, arch=s.z, value=loss.detach())
