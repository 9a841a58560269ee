"""The base of the relaxation estimators: the gradient of the loss at a relaxed architecture (biased)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from unas_lightning.distributions import Arch, check_temperature
from unas_lightning.estimators.base import Estimator, EstimatorOutput, LossFn, loss_vector


class Relaxation(Estimator):
    """d/dphi L(relax(phi)) for a differentiable relaxation at temperature tau: one evaluation, biased for
    E_{p_phi}[L(z)] (the relaxed network is not a sampled one), ``loss_fn`` differentiable in relaxed rows.

    Subclasses define :meth:`relax`; ``Softmax`` (DARTS) and ``GumbelSoftmax`` (SNAS) are the two built in.

    Args:
        temperature: tau of the relaxation.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)

    def hparams(self) -> dict[str, object]:
        return {"temperature": self.temperature}

    def relax(self, logits: Mapping[str, Tensor]) -> tuple[Arch, Arch]:
        """(the architecture ``loss_fn`` is evaluated at, with a graph to phi; the one-hot one to report)."""
        raise NotImplementedError

    def surrogate(self, logits: Mapping[str, Tensor], loss_fn: LossFn) -> EstimatorOutput:
        relaxed, reported = self.relax(logits)
        loss = loss_vector(loss_fn(relaxed), logits).mean()  # a scalar, or per-example losses averaged
        # A sampled network whose output does not depend on its rows (every path through "none": the
        # output is zero) has the gradient 0 through them; the zero term keeps a graph to phi so that the
        # backward runs, on every DDP rank alike, instead of failing on a loss without one.
        loss = loss + 0.0 * sum(r.sum() for r in relaxed.values() if r.requires_grad)
        return EstimatorOutput(loss=loss, arch=reported, value=loss.detach())
