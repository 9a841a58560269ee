"""RELAX for non-differentiable losses (paper Eq. 5; Grathwohl et al. 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from unas_lightning.arch_loss import ArchLoss, as_arch_loss
from unas_lightning.estimators._control_variate import ControlVariateEstimator
from unas_lightning.estimators._cv_estimate import CVSamples
from unas_lightning.estimators._relax_control import LinearControl
from unas_lightning.estimators.base import BlackBox

FITS = ("regression", "variance", "both", "none")


class Relax(ControlVariateEstimator, BlackBox):
    """Unbiased gradient of E_{p_phi(z)}[L_n(z)] for a loss known only at one-hot z (Eq. 5).

    The control variate is c_n(z) = E_{r_phi(zeta|z)}[g(zeta)] with a differentiable surrogate g:

        g_hat = [L_n(z) - eta g(zeta~) - beta] d log p(z) - eta d g(zeta~) + eta d g(zeta)

    ``loss_fn`` is evaluated once per sample, at the one-hot z and without gradient (a table
    lookup, a measured latency); g is evaluated at the relaxations. The estimate is unbiased for
    *any* g: a poor g only costs variance, never bias (the paper's point against FBNet-style
    surrogate-only gradients, which are term (iii) alone).

    g is fitted online: ``fit="regression"`` minimizes (g(z) - L_n(z))^2 on the observed pairs (the
    paper); ``"variance"`` follows the gradient of the estimator's own second moment (RELAX paper);
    ``"both"`` sums the two; ``"none"`` keeps g fixed (e.g. a pre-fitted latency surrogate).

    Cost per step: k evaluations of ``loss_fn`` (discrete) and 2k of g.

    Args:
        control: g, any ``nn.Module`` mapping an architecture to a scalar (default: ``LinearControl``); the
            paper calls it the surrogate, a word this package keeps for ``Estimator.surrogate()``.
        temperature: (initial) tau of the relaxations.
        eta: (initial) scale of the control variate.
        num_samples: samples per estimate (k > 1 adds leave-one-out baselines).
        fit: how g is trained (see above).
        self_tuning: also learn eta, temperature and beta by the variance objective.
        tune_lr: learning rate of the estimator's Adam optimizer (g and the tuned quantities).
        tune_temperature: with ``self_tuning``, also learn tau (needs a double backward through g).
        conditional: ``"independent"`` (fresh noise, two evaluations of g per sample; the default) or
            ``"coupled"`` (zeta~ from the sample's own race, one).

    Examples:
        >>> import torch
        >>> table = torch.tensor([3.0, 1.0, 2.0])
        >>> logits = {"op": torch.zeros(3, requires_grad=True)}
        >>> out = Relax().surrogate(logits, lambda a: table[int(a["op"].argmax())])
        >>> out.loss.backward(); logits["op"].grad.shape
        torch.Size([3])
    """

    def __init__(
        self,
        control: nn.Module | None = None,
        temperature: float = 0.4,
        eta: float = 1.0,
        num_samples: int = 1,
        fit: Literal["regression", "variance", "both", "none"] = "regression",
        self_tuning: bool = False,
        tune_lr: float = 0.01,
        tune_temperature: bool = True,
        conditional: Literal["coupled", "independent"] = "independent",
    ):
        if fit not in FITS:
            raise ValueError(f"fit must be one of {list(FITS)}, got {fit!r}.")
        super().__init__(temperature, eta, num_samples, self_tuning, tune_lr, tune_temperature, conditional)
        self.g = control if control is not None else LinearControl()
        self.fit = fit

    def hparams(self) -> dict[str, object]:
        return {**super().hparams(), "fit": self.fit}

    def prepare(self, logits: Mapping[str, Tensor]) -> None:
        if isinstance(self.g, LinearControl):
            self.g.materialize(logits)

    def control_variate(self, loss: ArchLoss) -> ArchLoss:
        """c = g, the surrogate (the loss itself is never differentiated)."""
        return as_arch_loss(self.g)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        own = {f"g.{n}": p for n, p in self.g.named_parameters() if p.requires_grad} if self.fit != "none" else {}
        return {**super().trainable_parameters(), **own}

    def uses_variance_objective(self) -> bool:
        return super().uses_variance_objective() or self.fit in ("variance", "both")

    def extra_objective(self, s: CVSamples) -> Tensor | None:
        if self.fit not in ("regression", "both"):
            return None
        pred = torch.stack([self.g(z).reshape(-1) for z in s.z])
        return ((pred - s.f) ** 2).mean()
