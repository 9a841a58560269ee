"""A new gradient estimator in a user's own module, selected from a config by ``class_path``.

Nothing inside ``unas_lightning`` changes: put this file's folder on ``PYTHONPATH`` and run

    PYTHONPATH=examples unas-cli fit --config configs/search/quickstart.yaml --config examples/custom_estimator.yaml

``StraightThroughGumbel`` is the straight-through Gumbel-softmax estimator (Bengio et al. 2013; Jang
et al. 2017): the forward pass uses the one-hot sample z, the backward pass the gradient of its
relaxation zeta. It is biased, cheap (one evaluation at z) and a classic baseline next to REBAR.
"""

from __future__ import annotations

from unas_lightning.distributions import ArchDistribution, check_temperature
from unas_lightning.estimators import Estimator, EstimatorOutput
from unas_lightning.estimators.base import loss_vector


class StraightThroughGumbel(Estimator):
    """Straight-through Gumbel-softmax: L evaluated at one-hot z, differentiated through zeta.

    Cost: one evaluation of ``loss_fn`` at z (with gradient through the relaxation).

    Args:
        temperature: tau of the relaxation that carries the gradient.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)

    def hparams(self):
        return {"temperature": self.temperature}

    def surrogate(self, logits, loss_fn):
        s = ArchDistribution(logits).rsample(self.temperature)
        hard = {k: s.z[k] - s.zeta[k].detach() + s.zeta[k] for k in s.z}  # value z, gradient of zeta
        loss = loss_vector(loss_fn(hard), logits).mean()  # a scalar, or per-example losses averaged
        return EstimatorOutput(loss=loss, arch=s.z, value=loss.detach())
