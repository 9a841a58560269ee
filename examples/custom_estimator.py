"""A new gradient estimator in a user's own module, selected from a config by ``class_path``.

Nothing inside ``unas_lightning`` changes: put this file's folder on ``PYTHONPATH`` and run

    PYTHONPATH=examples unas-cli fit --config configs/search/quickstart.yaml --config examples/custom_estimator.yaml

``StraightThroughGumbel`` is the straight-through Gumbel-softmax estimator (Bengio et al. 2013; Jang
et al. 2017): the forward pass uses the one-hot sample z, the backward pass the gradient of its
relaxation zeta. It is biased, cheap (one evaluation at z) and a classic baseline next to REBAR. It
builds on ``Relaxation`` (a temperature, one evaluation); any ``Estimator`` subclass with a
``surrogate(logits, loss_fn)`` method works the same way.
"""

from __future__ import annotations

from unas_lightning.distributions import ArchDistribution
from unas_lightning.estimators.relaxation import Relaxation


class StraightThroughGumbel(Relaxation):
    """Straight-through Gumbel-softmax: L evaluated at one-hot z, differentiated through zeta.

    Cost: one evaluation of ``loss_fn`` at z (with gradient through the relaxation).

    Args:
        temperature: tau of the relaxation that carries the gradient.
    """

    def relax(self, logits):
        s = ArchDistribution(logits).rsample(self.temperature)
        hard = {k: s.z[k] - s.zeta[k].detach() + s.zeta[k] for k in s.z}  # value z, gradient of zeta
        return hard, s.z
