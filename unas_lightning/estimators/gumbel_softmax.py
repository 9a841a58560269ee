"""Gumbel-softmax / concrete relaxation, as used by SNAS (paper Sec. 2)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from unas_lightning.distributions import Arch, ArchDistribution
from unas_lightning.estimators.relaxation import Relaxation


class GumbelSoftmax(Relaxation):
    """Reparameterized relaxed sample: gradient of L(zeta), zeta = softmax((log p_phi + G) / tau).

    SNAS optimizes E_{p_phi(zeta)}[L(zeta)] instead of E_{p_phi(z)}[L(z)]; this is term (iii) of
    Eq. 3 alone and therefore biased for the discrete objective. Cost: one relaxed evaluation.

    Args:
        temperature: tau of the relaxation.
    """

    def relax(self, logits: Mapping[str, Tensor]) -> tuple[Arch, Arch]:
        s = ArchDistribution(logits).rsample(self.temperature)
        return s.zeta, s.z
