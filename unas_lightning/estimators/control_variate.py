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
from unas_lightning.estimators.base import (
    Estimator,
    EstimatorOutput,
    LossFn,
    log_prob_per_example,
    loss_vector,
    strip_batch,
)

ControlVariate = Callable[[Arch], Tensor]


@dataclass
class CVSamples:
    """k draws with the quantities the estimate needs; n = 1, or B per-example architectures."""

    log_p: Tensor  # [k, n] log p_phi(z_i), graph to phi
    f: Tensor  # [k, n] f(z_i), detached
    c_zeta: Tensor  # [k, n] c(zeta_i), graph to phi (and theta)
    c_tilde: Tensor  # [k, n] c(zeta~_i), graph to phi (and theta)
    z: list[Arch]

    @property
    def n(self) -> int:
        return self.f.shape[1]


def draw(
    logits: Mapping[str, Tensor],
    loss_fn: Callable[[Arch], Tensor],
    c: ControlVariate,
    k: int,
    temperature: float | Tensor,
    on_first_value: Callable[[int], None] | None = None,
) -> CVSamples:
    """Sample z, zeta, zeta~ k times and evaluate f at z (without gradient) and c at both relaxations.

    ``on_first_value(n)`` is called once the first loss tells whether the losses are per-example.
    """
    dist = ArchDistribution(logits)
    many = getattr(c, "many", None)  # a loss that evaluates several architectures in one pass
    log_p, f, c_zeta, c_tilde, zs = [], [], [], [], []
    for i in range(k):
        s = dist.rsample(temperature)
        zeta_tilde = dist.conditional_rsample(s.z, temperature)
        with torch.no_grad():
            f.append(loss_vector(loss_fn(s.z), logits).detach())
        n = f[-1].shape[0]
        if i == 0 and on_first_value is not None:
            on_first_value(n)
        pair = many([s.zeta, zeta_tilde]) if callable(many) else [c(s.zeta), c(zeta_tilde)]
        c_zeta.append(_match(pair[0], n, logits))
        c_tilde.append(_match(pair[1], n, logits))
        log_p.append(log_prob_per_example(dist.log_probs, s.z, n))
        zs.append(s.z)
    return CVSamples(
        log_p=torch.stack(log_p), f=torch.stack(f), c_zeta=torch.stack(c_zeta), c_tilde=torch.stack(c_tilde), z=zs
    )


def _match(value: Tensor, n: int, logits: Mapping[str, Tensor]) -> Tensor:
    v = loss_vector(value, logits)
    if v.shape[0] != n:
        raise ValueError(f"the control variate returned {v.shape[0]} values where the loss returned {n}.")
    return v


def baselines(residual: Tensor, beta: Tensor | float) -> Tensor:
    """beta for k = 1; leave-one-out means over the k samples of ``residual`` [k, n] (detached) for k > 1."""
    k = residual.shape[0]
    if k == 1:
        return torch.as_tensor(beta, dtype=residual.dtype).reshape(1, 1)
    r = residual.detach()
    return (r.sum(0, keepdim=True) - r) / (k - 1)


def surrogate_loss(s: CVSamples, eta: Tensor | float, beta: Tensor | float) -> Tensor:
    """The scalar whose phi-gradient is g_hat (the standard REBAR/RELAX surrogate), averaged over k and n."""
    residual = s.f - eta * s.c_tilde.detach()
    coef = (residual - baselines(residual, beta)).detach()
    return ((coef * s.log_p).sum() + eta * (s.c_zeta - s.c_tilde).sum()) / s.f.numel()


def explicit_estimate(s: CVSamples, phi: Sequence[Tensor], eta: Tensor | float, beta: Tensor | float) -> list[Tensor]:
    """g_hat per logits tensor, with a graph to eta, beta and whatever c depends on besides phi.

    With per-example architectures ``phi`` are the expanded logits [B, ...]: the gradient of sample
    b's log-probability lives in row b, so one backward pass yields every per-example score.
    """
    k, n = s.f.shape
    residual = s.f - eta * s.c_tilde  # graph to theta; multiplies d log p as a value
    coef = residual - baselines(residual, beta)
    reparam = torch.autograd.grad((s.c_zeta - s.c_tilde).sum(), phi, create_graph=True, allow_unused=True)
    out = [eta * (r if r is not None else torch.zeros_like(p)) for r, p in zip(reparam, phi, strict=True)]
    for i in range(k):
        d_log_p = torch.autograd.grad(s.log_p[i].sum(), phi, retain_graph=True)
        out = [o + _per_row(coef[i], d, n) * d for o, d in zip(out, d_log_p, strict=True)]
    return [o / (k * n) for o in out]


def _per_row(coef: Tensor, like: Tensor, n: int) -> Tensor:
    return coef.reshape(()) if n == 1 else coef.reshape(n, *[1] * (like.dim() - 1))


def linear_surrogate(phi: Sequence[Tensor], g_hat: Sequence[Tensor | None]) -> Tensor:
    """sum <g_hat.detach(), phi>: a scalar whose gradient w.r.t. phi is exactly g_hat."""
    return sum((g.detach() * p).sum() for g, p in zip(g_hat, phi, strict=True) if g is not None)


def linear_parts(s: CVSamples, phi: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """(u, v, w) with g_hat = (u + eta v + beta w) / (k n): the estimate as a linear function of eta, beta.

    With F_i, C_i the leave-one-out means of f and c(zeta~) (zero for k = 1),
    u = sum_i (f_i - F_i) d log p_i,  v = sum_i -(c~_i - C_i) d log p_i + d c(zeta_i) - d c(zeta~_i),
    w = -sum_i d log p_i (k = 1 only). First-order gradients only: no double backward.
    """
    k = s.f.shape[0]
    loo = (lambda t: (t.sum(0, keepdim=True) - t) / (k - 1)) if k > 1 else (lambda t: torch.zeros_like(t))
    c_tilde = s.c_tilde.detach()
    u = torch.autograd.grad(((s.f - loo(s.f)) * s.log_p).sum(), phi, retain_graph=True, allow_unused=True)
    v_score = (-(c_tilde - loo(c_tilde)) * s.log_p).sum()
    v = torch.autograd.grad(v_score + (s.c_zeta - s.c_tilde).sum(), phi, retain_graph=True, allow_unused=True)
    w = torch.autograd.grad(-s.log_p.sum() if k == 1 else 0 * s.log_p.sum(), phi, allow_unused=True)

    def fill(gs):
        return [g if g is not None else torch.zeros_like(p) for g, p in zip(gs, phi, strict=True)]

    return fill(u), fill(v), fill(w)


def _average_over_ranks(grads: list[Tensor]) -> list[Tensor]:
    """The mean of ``grads`` over the processes of a ``torch.distributed`` job (DDP), else ``grads``.

    Under DDP every rank estimates from its own samples, and phi's gradient is averaged by DDP; the
    estimator's own tuned state (eta, log tau, beta, RELAX's g) is averaged here the same way, so it
    stays identical on every rank (and a checkpoint written by rank 0 holds everybody's state).
    Every rank calls ``surrogate`` once per training step, so the collective is matched.
    """
    if not grads or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return grads
    world = torch.distributed.get_world_size()
    if world == 1:
        return grads
    flat = torch.cat([g.detach().reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    return [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]


def variance_objective(g_hat: Sequence[Tensor], n: int = 1) -> Tensor:
    """sum of squared estimates of the gradient of phi: its theta-gradient equals that of the total variance.

    Per-example rows (n > 1) are summed first: the expanded logits all feed the same phi.
    """
    return sum(((g.sum(0) if n > 1 else g) ** 2).sum() for g in g_hat)


class ControlVariateEstimator(Estimator):
    """Base of ``Rebar`` and ``Relax``: the estimate above, optional self-tuning and k samples.

    Subclasses say what the control variate c is (``control_variate``) and may fit extra state
    (``extra_objective``, e.g. RELAX's regression of g on observed losses).

    Args:
        temperature: initial tau of the relaxations (> 0).
        eta: initial scale of the control variate.
        num_samples: k samples per estimate; k > 1 uses leave-one-out baselines.
        self_tuning: learn eta, log tau and (k = 1) a baseline beta online by gradient descent on the
            estimator's own second moment sum(g_hat^2) (REBAR/RELAX papers).
        tune_temperature: with ``self_tuning``, also learn tau. Its gradient needs a double backward
            through the control variate (several times the cost of an estimate when c is the
            supernet); without it eta and beta are tuned from first-order gradients in closed form
            (g_hat is linear in them), at the cost of the fixed-setting estimator.
        tune_lr: Adam learning rate of the tuned quantities.
    """

    def __init__(
        self,
        temperature: float = 0.4,
        eta: float = 1.0,
        num_samples: int = 1,
        self_tuning: bool = False,
        tune_lr: float = 0.01,
        tune_temperature: bool = True,
    ):
        super().__init__()
        tau = check_temperature(temperature)
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
        if not tune_lr > 0:
            raise ValueError(f"tune_lr must be > 0, got {tune_lr}.")
        self.num_samples = num_samples
        self.self_tuning = bool(self_tuning)
        self.tune_temperature = bool(tune_temperature)
        self.tune_lr = float(tune_lr)
        init = {"log_temperature": math.log(tau), "eta": float(eta), "beta": 0.0}
        for name, value in init.items():
            t = torch.tensor(value)
            if self.self_tuning and (name != "log_temperature" or self.tune_temperature):
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
        return [p for p in (self.log_temperature, self.eta, self.beta) if isinstance(p, nn.Parameter)]

    def uses_variance_objective(self) -> bool:
        """True when tuning needs the estimate as a graph (double backward); else eta, beta are closed-form."""
        return self.self_tuning and self.tune_temperature

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
            **({"tune_temperature": self.tune_temperature} if self.self_tuning else {}),
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
    def surrogate(self, logits, loss_fn, relaxed_loss_fn=None):
        """The estimate (Contract 2). ``relaxed_loss_fn``, when given, is what a loss-based control
        variate (REBAR's c = L) evaluates at the relaxations instead of ``loss_fn``, e.g. the same loss on
        a sub-batch: any differentiable function keeps the estimate unbiased; the closer it tracks
        ``loss_fn``, the lower the variance."""
        phi = list(logits.values())
        graph = self.uses_variance_objective()
        tau = self.temperature if isinstance(self.log_temperature, nn.Parameter) else float(self.temperature.detach())
        eta = self.eta if graph else float(self.eta.detach())
        beta = self.beta if graph else float(self.beta.detach())
        s = draw(
            logits,
            loss_fn,
            self.control_variate(loss_fn if relaxed_loss_fn is None else relaxed_loss_fn),
            self.num_samples,
            tau,
            on_first_value=lambda n: self.prepare(strip_batch(logits, n)),
        )
        opt = self._get_optimizer()
        closed_form: dict[str, Tensor] = {}
        if graph:
            g_hat = explicit_estimate(s, phi, eta, beta)
            loss = linear_surrogate(phi, g_hat)
            objective = variance_objective(g_hat, s.n)
        elif self.self_tuning:
            loss, closed_form = self._closed_form_tuning(s, phi, eta, beta)
            objective = None
        else:
            loss = surrogate_loss(s, eta, beta)
            objective = None
            if opt is not None:  # state is updated in place below: hand back the estimate itself
                loss = linear_surrogate(phi, torch.autograd.grad(loss, phi, allow_unused=True))
        extra = self.extra_objective(s)
        if extra is not None:
            objective = extra if objective is None else objective + extra
        if opt is not None and (objective is not None or closed_form):
            params = self.trainable_parameters()
            grads = [None] * len(params)
            if objective is not None:
                grads = list(torch.autograd.grad(objective, params, allow_unused=True))
            for i, p in enumerate(params):
                extra_grad = closed_form.get(next((n for n, q in self.named_parameters() if q is p), ""))
                if extra_grad is not None:
                    grads[i] = extra_grad if grads[i] is None else grads[i] + extra_grad
            present = _average_over_ranks([g for g in grads if g is not None])  # None: same on every rank
            grads = [None if g is None else present.pop(0) for g in grads]
            # a NaN/inf loss (skipped by the search) must not corrupt the tuned state for good: skip its step
            if all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
                opt.zero_grad(set_to_none=True)
                for p, g in zip(params, grads, strict=True):
                    p.grad = None if g is None else g.detach()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return EstimatorOutput(loss=loss, arch=s.z[0], value=s.f[0].mean())

    def _closed_form_tuning(self, s: CVSamples, phi, eta: float, beta: float):
        """The estimate, and d/d(eta, beta) sum(g_hat^2), from g_hat = (u + eta v + beta w) / (k n)."""
        u, v, w = linear_parts(s, phi)
        scale = 1.0 / s.f.numel()
        g_hat = [(a + eta * b + beta * c) * scale for a, b, c in zip(u, v, w, strict=True)]

        def reduce(t: Tensor) -> Tensor:  # per-example rows all feed the same phi
            return t.sum(0) if s.n > 1 else t

        d_eta = sum((2 * reduce(g) * reduce(b) * scale).sum() for g, b in zip(g_hat, v, strict=True))
        d_beta = sum((2 * reduce(g) * reduce(c) * scale).sum() for g, c in zip(g_hat, w, strict=True))
        return linear_surrogate(phi, g_hat), {"eta": d_eta.reshape(()), "beta": d_beta.reshape(())}
