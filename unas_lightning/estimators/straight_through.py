"""Straight-through Gumbel-softmax (Bengio et al. 2013; Jang et al. 2017): the value at z, the gradient of zeta."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from unas_lightning.distributions import Arch, ArchDistribution
from unas_lightning.estimators.relaxation import Relaxation


class StraightThroughGumbel(Relaxation):
    """L evaluated at the one-hot sample z, differentiated as if it were evaluated at its relaxation zeta:

        z_st = z + zeta - stopgrad(zeta),   g = dL(z_st)/dphi

    with zeta = softmax((log p_phi + G) / tau) from the same Gumbel noise G as z. The forward pass is a
    sampled network (one-hot: only its operations run), so a step costs what REINFORCE's does, but the
    gradient is biased for E_{p_phi}[L(z)] (it linearizes L around z along zeta) and ``loss_fn`` must be
    differentiable in the architecture rows. A classic strong baseline; ``ReinMax`` is its second-order
    refinement.

    Cost: one evaluation of ``loss_fn`` at z, with gradient.

    Args:
        temperature: tau of the relaxation that carries the gradient.

    Examples:
        >>> import torch
        >>> logits = {"op": torch.zeros(3, requires_grad=True)}
        >>> out = StraightThroughGumbel().surrogate(logits, lambda a: (a["op"] * torch.tensor([1.0, 2, 3])).sum())
        >>> out.arch["op"].sum().item(), round(float(out.value), 4) in (1.0, 2.0, 3.0)  # z's value (+ 0 * grad path)
        (1.0, True)
    """

    def relax(self, logits: Mapping[str, Tensor]) -> tuple[Arch, Arch]:
        s = ArchDistribution(logits).rsample(self.temperature)
        return {k: s.z[k] + s.zeta[k] - s.zeta[k].detach() for k in s.z}, s.z
