"""ReinMax (Liu et al., NeurIPS 2023): straight-through with a second-order (Heun's method) correction."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from unas_lightning.distributions import Arch, ArchDistribution
from unas_lightning.estimators.relaxation import Relaxation


class ReinMax(Relaxation):
    """Straight-through's gradient corrected to second order: L evaluated at the one-hot sample z ~ p_phi,
    differentiated through

        pi_0 = softmax(phi),   pi_1 = softmax(phi + stopgrad(log((z + softmax(phi / tau)) / 2) - phi)),
        z_rm = z + pi_2 - stopgrad(pi_2),   pi_2 = 2 pi_1 - pi_0 / 2.

    Straight-through approximates the gradient of E[L(z)] with a first-order (forward Euler) step; ReinMax
    uses Heun's method, which is exact for a quadratic L (Liu et al. 2023, "Bridging Discrete and
    Backpropagation: Straight-Through and Beyond"). Still biased in general and ``loss_fn`` must be
    differentiable in the rows; a forward pass is a sampled (one-hot) network, as with REINFORCE. The
    authors recommend tau >= 1.

    Cost: one evaluation of ``loss_fn`` at z, with gradient.

    Args:
        temperature: tau of the softmax that enters pi_1.

    Examples:
        >>> import torch
        >>> logits = {"op": torch.zeros(2, 3, requires_grad=True)}
        >>> out = ReinMax().surrogate(logits, lambda a: (a["op"] * torch.tensor([1.0, 2, 3])).sum())
        >>> out.loss.backward(); logits["op"].grad.shape
        torch.Size([2, 3])
    """

    def relax(self, logits: Mapping[str, Tensor]) -> tuple[Arch, Arch]:
        dist = ArchDistribution(logits)
        z = dist.sample()
        out = {}
        for k, phi in logits.items():
            pi0 = torch.softmax(phi, -1)
            mid = (z[k].to(phi.dtype) + torch.softmax(phi / self.temperature, -1)) / 2
            pi1 = torch.softmax(phi + (torch.log(mid) - phi).detach(), -1)
            pi2 = 2 * pi1 - pi0 / 2
            out[k] = z[k] + pi2 - pi2.detach()
        return out, z
