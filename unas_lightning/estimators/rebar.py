"""REBAR for differentiable losses (paper Eq. 3; Tucker et al. 2017)."""

from __future__ import annotations

from unas_lightning.distributions import ArchDistribution, check_temperature
from unas_lightning.estimators.base import Estimator, EstimatorOutput, as_scalar


class Rebar(Estimator):
    """Unbiased REINFORCE with the conditional Gumbel-softmax control variate of Eq. 3.

    With z ~ p_phi, zeta the Gumbel-softmax relaxation of the same noise and zeta~ ~ r_phi(zeta|z)
    (``ArchDistribution.conditional_rsample``), the single-sample estimate is

        g = [L(z) - eta L(zeta~)] d/dphi log p_phi(z)      (i)   reinforce with c_d(z) = L(zeta~)
            - eta d/dphi L(zeta~)                           (ii)  correction
            + eta d/dphi L(zeta)                            (iii) Gumbel-softmax (SNAS) term

    implemented as the surrogate ``(L(z) - eta L(zeta~)).detach() * log p(z) + eta (L(zeta) - L(zeta~))``.
    It is unbiased for any eta and temperature because E[(ii)] cancels the dependence of (i) on
    the control variate and (iii) equals d/dphi E[c_d] (Eq. 4). ``loss_fn`` must be differentiable in
    relaxed rows. Cost: one discrete and two relaxed evaluations per step.

    Args:
        temperature: tau of both relaxations; the paper's code uses 0.4.
        eta: scale of the control variate; the paper uses 1.
    """

    def __init__(self, temperature: float = 0.4, eta: float = 1.0):
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.eta = float(eta)

    def hparams(self):
        return {"temperature": self.temperature, "eta": self.eta}

    def surrogate(self, logits, loss_fn):
        dist = ArchDistribution(logits)
        s = dist.rsample(self.temperature)
        zeta_tilde = dist.conditional_rsample(s.z, self.temperature)
        f_z = as_scalar(loss_fn(s.z)).detach()
        f_zeta = as_scalar(loss_fn(s.zeta))
        f_zeta_tilde = as_scalar(loss_fn(zeta_tilde))
        eta = self.eta
        loss = (f_z - eta * f_zeta_tilde.detach()) * dist.log_prob(s.z) + eta * (f_zeta - f_zeta_tilde)
        return EstimatorOutput(loss=loss, arch=s.z, value=f_z)
