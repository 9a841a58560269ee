"""Shared machinery of the conditional-relaxation control-variate estimators (REBAR, RELAX).

For k samples z_i ~ p_phi with relaxations zeta_i (same noise) and zeta~_i ~ r_phi(zeta | z_i), and a
differentiable control variate c (the loss itself for REBAR, Eq. 3; a surrogate g for RELAX, Eq. 5):

    g_hat = 1/k sum_i { [f(z_i) - eta c(zeta~_i) - beta_i] d log p(z_i) + eta d c(zeta_i) - eta d c(zeta~_i) }

beta_i is a constant baseline (k = 1) or the leave-one-out mean of the other samples' residuals
f(z_j) - eta c(zeta~_j) (k > 1); both keep g_hat unbiased because they do not depend on sample i.

When the estimator tunes parameters theta (eta, log-temperature, beta, the surrogate g) by the
variance objective of Grathwohl et al. (2018), g_hat is built explicitly with a graph to theta and
d/dtheta sum(g_hat^2) is followed; E[g_hat] does not depend on theta, so this minimizes the variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unas_lightning.distributions import Arch, ArchDistribution, check_temperature
from unas_lightning.estimators.base import Estimator, EstimatorOutput, LossFn, as_scalar

ControlVariate = Callable[[Arch], Tensor]


@dataclass
class CVSamples:
    """k draws with the quantities the estimate needs."""

    log_p: list[Tensor]  # log p_phi(z_i), graph to phi
    f: Tensor  # [k] f(z_i), detached
    c_zeta: list[Tensor]  # c(zeta_i), graph to phi (and theta)
    c_tilde: list[Tensor]  # c(zeta~_i), graph to phi (and theta)
    z: list[Arch]


def draw(
    logits: Mapping[str, Tensor],
    loss_fn: Callable[[Arch], Tensor],
    c: ControlVariate,
    k: int,
    temperature: float | Tensor,
) -> CVSamples:
    """Sample z, zeta, zeta~ k times and evaluate f at z (without gradient) and c at both relaxations."""
    dist = ArchDistribution(logits)
    log_p, f, c_zeta, c_tilde, zs = [], [], [], [], []
    for _ in range(k):
        s = dist.rsample(temperature)
        zeta_tilde = dist.conditional_rsample(s.z, temperature)
        with torch.no_grad():
            f.append(as_scalar(loss_fn(s.z)).detach())
        c_zeta.append(as_scalar(c(s.zeta)))
        c_tilde.append(as_scalar(c(zeta_tilde)))
        log_p.append(dist.log_prob(s.z))
        zs.append(s.z)
    return CVSamples(log_p=log_p, f=torch.stack(f), c_zeta=c_zeta, c_tilde=c_tilde, z=zs)


def baselines(residual: Tensor, beta: Tensor | float) -> Tensor:
    """beta for k = 1; leave-one-out means of ``residual`` (detached) for k > 1."""
    k = residual.shape[0]
    if k == 1:
        return torch.as_tensor(beta, dtype=residual.dtype).reshape(1)
    r = residual.detach()
    return (r.sum() - r) / (k - 1)


def surrogate_loss(s: CVSamples, eta: Tensor | float, beta: Tensor | float) -> Tensor:
    """The scalar whose phi-gradient is g_hat (the standard REBAR/RELAX surrogate)."""
    c_tilde = torch.stack(s.c_tilde)
    residual = s.f - eta * c_tilde.detach()
    coef = (residual - baselines(residual, beta)).detach()
    k = len(s.log_p)
    score = sum(coef[i] * s.log_p[i] for i in range(k))
    reparam = sum(s.c_zeta[i] - s.c_tilde[i] for i in range(k))
    return (score + eta * reparam) / k


def explicit_estimate(s: CVSamples, phi: Sequence[Tensor], eta: Tensor | float, beta: Tensor | float) -> list[Tensor]:
    """g_hat per logits tensor, with a graph to eta, beta and whatever c depends on besides phi."""
    k = len(s.log_p)
    residual = s.f - eta * torch.stack(s.c_tilde)  # graph to theta; multiplies d log p as a value
    coef = residual - baselines(residual, beta)
    reparam = torch.autograd.grad(sum(s.c_zeta) - sum(s.c_tilde), phi, create_graph=True, allow_unused=True)
    out = [eta * (r if r is not None else torch.zeros_like(p)) for r, p in zip(reparam, phi, strict=True)]
    for i in range(k):
        d_log_p = torch.autograd.grad(s.log_p[i], phi, retain_graph=True)
        out = [o + coef[i] * d for o, d in zip(out, d_log_p, strict=True)]
    return [o / k for o in out]


def linear_surrogate(phi: Sequence[Tensor], g_hat: Sequence[Tensor | None]) -> Tensor:
    """sum <g_hat.detach(), phi>: a scalar whose gradient w.r.t. phi is exactly g_hat."""
    return sum((g.detach() * p).sum() for g, p in zip(g_hat, phi, strict=True) if g is not None)


def variance_objective(g_hat: Sequence[Tensor]) -> Tensor:
    """sum of squared estimates: its theta-gradient equals that of the total variance."""
    return sum((g**2).sum() for g in g_hat)


class ControlVariateEstimator(Estimator):
    """Base of ``Rebar`` and ``Relax``: the estimate above, optional self-tuning and k samples.

    Subclasses say what the control variate c is (``control_variate``) and may fit extra state
    (``extra_objective``, e.g. RELAX's regression of g on observed losses).

    Args:
        temperature: initial tau of the relaxations (> 0).
        eta: initial scale of the control variate.
        num_samples: k samples per estimate; k > 1 uses leave-one-out baselines.
        self_tuning: learn eta, log tau and (k = 1) a baseline beta online by gradient descent on the
            estimator's own second moment sum(g_hat^2) (REBAR/RELAX papers). Costs a double backward
            through the control variate.
        tune_lr: Adam learning rate of the tuned quantities.
    """

    def __init__(
        self,
        temperature: float = 0.4,
        eta: float = 1.0,
        num_samples: int = 1,
        self_tuning: bool = False,
        tune_lr: float = 0.01,
    ):
        super().__init__()
        tau = check_temperature(temperature)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
        if not tune_lr > 0:
            raise ValueError(f"tune_lr must be > 0, got {tune_lr}.")
        self.num_samples = num_samples
        self.self_tuning = bool(self_tuning)
        self.tune_lr = float(tune_lr)
        init = {"log_temperature": math.log(tau), "eta": float(eta), "beta": 0.0}
        for name, value in init.items():
            t = torch.tensor(value)
            if self.self_tuning:
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        self._optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict | None = None

    # -- what subclasses define ------------------------------------------------------------------
    def control_variate(self, loss_fn: LossFn) -> ControlVariate:
        raise NotImplementedError

    def extra_objective(self, s: CVSamples) -> Tensor | None:
        """An additional objective for the trainable state (minimized with the variance one)."""
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the estimator's own optimizer updates."""
        return [self.log_temperature, self.eta, self.beta] if self.self_tuning else []

    def uses_variance_objective(self) -> bool:
        return self.self_tuning

    # -- state -----------------------------------------------------------------------------------
    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def hparams(self):
        return {
            "temperature": round(float(self.temperature.detach()), 4),
            "eta": round(float(self.eta.detach()), 4),
            "num_samples": self.num_samples,
            "self_tuning": self.self_tuning,
        }

    def _get_optimizer(self) -> torch.optim.Optimizer | None:
        params = self.trainable_parameters()
        if not params:
            return None
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(params, lr=self.tune_lr)
            if self._pending_optimizer_state is not None:
                self._optimizer.load_state_dict(self._pending_optimizer_state)
                self._pending_optimizer_state = None
        return self._optimizer

    def get_extra_state(self):
        """The estimator's optimizer state travels in checkpoints with the module."""
        opt = self._optimizer
        return {"optimizer": opt.state_dict() if opt is not None else self._pending_optimizer_state}

    def set_extra_state(self, state) -> None:
        saved = (state or {}).get("optimizer")
        self._optimizer = None
        self._pending_optimizer_state = saved

    # -- the estimate ----------------------------------------------------------------------------
    def surrogate(self, logits, loss_fn):
        phi = list(logits.values())
        tau = self.temperature if self.self_tuning else float(self.temperature.detach())
        eta = self.eta if self.self_tuning else float(self.eta.detach())
        beta = self.beta if self.self_tuning else 0.0
        s = draw(logits, loss_fn, self.control_variate(loss_fn), self.num_samples, tau)
        opt = self._get_optimizer()
        if self.uses_variance_objective():
            g_hat = explicit_estimate(s, phi, eta, beta)
            loss = linear_surrogate(phi, g_hat)
            objective = variance_objective(g_hat)
        else:
            loss = surrogate_loss(s, eta, beta)
            objective = None
            if opt is not None:  # state is updated in place below: hand back the estimate itself
                loss = linear_surrogate(phi, torch.autograd.grad(loss, phi, allow_unused=True))
        extra = self.extra_objective(s)
        if extra is not None:
            objective = extra if objective is None else objective + extra
        if opt is not None and objective is not None:
            params = self.trainable_parameters()
            grads = torch.autograd.grad(objective, params, allow_unused=True)
            opt.zero_grad(set_to_none=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = None if g is None else g.detach()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return EstimatorOutput(loss=loss, arch=s.z[0], value=s.f.mean())
