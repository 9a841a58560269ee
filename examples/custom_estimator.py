"""A new gradient estimator in a user's own module, selected from a config by ``class_path``.

Nothing inside ``unas_lightning`` changes: put this file's folder on ``PYTHONPATH`` and run

    PYTHONPATH=examples unas-cli fit --config configs/search/quickstart.yaml --config examples/custom_estimator.yaml

``StraightThroughSoftmax`` is the original straight-through estimator (Bengio et al. 2013): the forward
pass uses the one-hot sample z ~ p_phi, the backward pass the gradient of the probabilities
p = softmax(phi) themselves (no Gumbel noise, no temperature). It is biased, cheap (one evaluation at z)
and the first-order method that the package's ``ReinMax`` corrects to second order. It builds on
``Relaxation`` (one evaluation); any ``Estimator`` subclass with a ``surrogate(logits, loss_fn)`` method
works the same way.
"""

from __future__ import annotations

from unas_lightning.distributions import ArchDistribution
from unas_lightning.estimators.relaxation import Relaxation


class StraightThroughSoftmax(Relaxation):
    """Straight-through: L evaluated at one-hot z ~ p_phi, differentiated through p = softmax(phi / tau).

    Cost: one evaluation of ``loss_fn`` at z (with gradient through the probabilities).

    Args:
        temperature: tau of the softmax that carries the gradient (Bengio et al.: 1).
    """

    def relax(self, logits):
        dist = ArchDistribution(logits)
        z = dist.sample()
        p = {k: (v / self.temperature).softmax(-1) for k, v in logits.items()}
        return {k: z[k] + p[k] - p[k].detach() for k in z}, z  # value z, gradient of p
