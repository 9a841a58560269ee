"""REBAR for differentiable losses (paper Eq. 3; Tucker et al. 2017), optionally self-tuning."""

from __future__ import annotations

from unas_lightning.arch_loss import ArchLoss
from unas_lightning.estimators._control_variate import ControlVariateEstimator


class Rebar(ControlVariateEstimator):
    """Unbiased REINFORCE with the conditional Gumbel-softmax control variate of Eq. 3.

    With z ~ p_phi, zeta the Gumbel-softmax relaxation of the same noise and zeta~ ~ r_phi(zeta|z)
    (``ArchDistribution.conditional_rsample``), the single-sample estimate is

        g = [L(z) - eta L(zeta~) - beta] d/dphi log p_phi(z)   (i)   reinforce with c_d(z) = L(zeta~)
            - eta d/dphi L(zeta~)                               (ii)  correction
            + eta d/dphi L(zeta)                                (iii) Gumbel-softmax (SNAS) term

    It is unbiased for any eta, beta and temperature: E[(ii)] cancels the dependence of (i) on the
    control variate and (iii) equals d/dphi E[c_d] (Eq. 4). ``loss_fn`` must be differentiable in
    relaxed rows. The paper's setting is eta = 1, beta = 0, temperature 0.4 (fixed). When ``loss_fn`` is an
    ``ArchLoss`` whose ``relaxed()`` is a cheaper function (``SearchModule(cv_examples=m)``: the loss on m
    examples), the control variate is that function: still unbiased, one more source of variance.

    With ``self_tuning=True`` eta, the log-temperature and beta are trained online by Adam on the
    estimator's second moment sum(g^2) (the fix of the REBAR and RELAX authors); the estimate stays
    unbiased while they move. With ``num_samples=k > 1`` each sample's baseline is the leave-one-out
    mean of the other samples' residuals L(z_j) - eta L(zeta~_j).

    zeta~ is drawn with fresh noise by default (``conditional="independent"``). ``"coupled"`` draws it
    from the sample's own exponential race (the official code's common random numbers), so zeta~ = zeta
    in value and one relaxed evaluation serves both terms. Both are exact and unbiased; on the DARTS
    supernet the coupled estimate has 3-5x the variance of the independent one for 2/3 of the step
    time, so independent is the default and coupled the official configs' setting.

    Cost per step: k x (1 discrete + 2 relaxed evaluations of ``loss_fn``; 1 relaxed one coupled);
    self-tuning the temperature adds a double backward through the relaxed evaluations.

    Args:
        temperature: (initial) tau of both relaxations; the paper's code uses 0.4.
        eta: (initial) scale of the control variate; the paper uses 1.
        num_samples: samples per estimate (k).
        self_tuning: learn eta, temperature and beta by minimizing the estimator's variance.
        tune_lr: learning rate of the self-tuning Adam optimizer.
        tune_temperature: with ``self_tuning``, learn tau as well (a double backward through the
            relaxed loss, several times the cost of an estimate on a supernet); ``False`` tunes eta and
            beta only, in closed form, at the cost of the fixed-setting estimator.
        conditional: ``"coupled"`` or ``"independent"`` zeta~ (above).

    Examples:
        >>> import torch
        >>> logits = {"op": torch.zeros(3, requires_grad=True)}
        >>> out = Rebar().surrogate(logits, lambda a: (a["op"] * torch.tensor([1.0, 2.0, 3.0])).sum())
        >>> out.loss.backward(); logits["op"].grad.shape
        torch.Size([3])
    """

    def control_variate(self, loss: ArchLoss) -> ArchLoss:
        """c = L at the relaxations; the loss's ``relaxed()`` version when it offers a cheaper one."""
        return loss.relaxed()
