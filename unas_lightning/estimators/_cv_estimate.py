"""The REBAR/RELAX estimate, written once (paper Eq. 3 and 5).

For k samples z_i ~ p_phi with relaxations zeta_i (same noise) and zeta~_i ~ r_phi(zeta | z_i), a
loss f and a differentiable control variate c (the loss itself, or a cheaper relaxed version of it,
for REBAR; a surrogate g for RELAX):

    g_hat = 1/(k n) sum_i { [f(z_i) - eta c(zeta~_i) - b_i] d log p(z_i) + eta d c(zeta_i) - eta d c(zeta~_i) }

with b_i = beta (k = 1) or the leave-one-out mean of the other samples' residuals f(z_j) - eta c(zeta~_j)
(k > 1); n is 1, or B for per-example architectures. It is unbiased for any eta, beta, temperature and
c. Since it is linear in eta and beta, it is computed as

    g_hat = (u + eta v + beta w) / (k n),
    u = sum_i (f_i - F_i) d log p_i,
    v = sum_i -(c~_i - C_i) d log p_i + d c(zeta_i) - d c(zeta~_i),
    w = -sum_i d log p_i (k = 1; zero for k > 1),

F_i, C_i the leave-one-out means of f and c(zeta~) (zero for k = 1). Two forms of this one estimate:

* :func:`surrogate_loss`, a scalar whose phi-gradient is g_hat for fixed eta, beta: the caller's one
  backward pass computes the estimate (the fixed-setting estimator);
* :func:`linear_parts`, u, v and w themselves: eta and beta tuned in closed form from first-order
  gradients, or, with ``create_graph``, v keeping its graph to whatever c depends on besides phi (a
  learned temperature, RELAX's g) so that the estimator's second moment can be differentiated with
  respect to them (Grathwohl et al. 2018). ``tests/estimators/test_estimators.py`` checks both against the
  definition above.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from unas_lightning.arch_loss import ArchLoss
from unas_lightning.distributions import Arch, ArchDistribution, GumbelSample
from unas_lightning.estimators._leave_one_out import leave_one_out
from unas_lightning.estimators.base import log_prob_per_example, loss_vector


@dataclass
class CVSamples:
    """k draws with the quantities the estimate needs; n = 1, or B per-example architectures."""

    log_p: Tensor  # [k, n] log p_phi(z_i), graph to phi
    f: Tensor  # [k, n] f(z_i), detached
    c_tilde: Tensor  # [k, n] c(zeta~_i): its value (and graph to theta) multiplies d log p
    c_diff: Tensor  # [k, n] whose phi-gradient is d c(zeta_i) - d c(zeta~_i) (graph to theta)
    z: list[Arch]

    @property
    def n(self) -> int:
        return self.f.shape[1]


def draw(
    logits: Mapping[str, Tensor],
    loss: ArchLoss,
    c: ArchLoss,
    k: int,
    temperature: float | Tensor,
    on_first_value: Callable[[int], None] | None = None,
    coupled: bool = False,
) -> CVSamples:
    """Sample z, zeta, zeta~ k times; f at z (without gradient), c at the relaxations.

    Independent zeta~ (fresh noise): c at zeta and at zeta~, one ``c.many`` call. Coupled zeta~ (the
    sample's own race, ``ArchDistribution.coupled_conditional_rsample``): c is evaluated once, at
    :func:`coupled_point`; c(x) is c(zeta~) in value and c(x) - c(x).detach() carries the difference.
    ``on_first_value(n)`` is called once the first loss tells whether the losses are per-example.
    """
    dist = ArchDistribution(logits)
    log_p, f, c_tilde, c_diff, zs = [], [], [], [], []
    for i in range(k):
        s = dist.rsample(temperature)
        with torch.no_grad():
            f.append(loss_vector(loss(s.z), logits).detach())
        n = f[-1].shape[0]
        if i == 0 and on_first_value is not None:
            on_first_value(n)
        if coupled:
            c_x = _match(c(coupled_point(s, dist.coupled_conditional_rsample(s, temperature), temperature)), n, logits)
            c_tilde.append(c_x)
            c_diff.append(c_x - c_x.detach())
        else:
            pair = c.many([s.zeta, dist.conditional_rsample(s.z, temperature)])
            c_zeta, c_t = _match(pair[0], n, logits), _match(pair[1], n, logits)
            c_tilde.append(c_t)
            c_diff.append(c_zeta - c_t)
        log_p.append(log_prob_per_example(dist.log_probs, s.z, n))
        zs.append(s.z)
    return CVSamples(
        log_p=torch.stack(log_p), f=torch.stack(f), c_tilde=torch.stack(c_tilde), c_diff=torch.stack(c_diff), z=zs
    )


def coupled_point(sample: GumbelSample, zeta_tilde: Arch, temperature: float | Tensor) -> Arch:
    """x = zeta_tau + zeta - zeta~ for a coupled zeta~ (equal to zeta in value): x is zeta in value, its
    phi-gradient is d zeta - d zeta~ and its temperature-gradient that of zeta (zeta_tau is zeta with the
    noise held constant). So c(x) is c(zeta) = c(zeta~) in value, and the phi-gradient of c(x) is
    d c(zeta) - d c(zeta~): one evaluation of c for both terms of the estimate."""
    return {
        k: torch.softmax(sample.b[k].detach() / temperature, -1) + sample.zeta[k] - zeta_tilde[k] for k in sample.zeta
    }


def _match(value: Tensor, n: int, logits: Mapping[str, Tensor]) -> Tensor:
    v = loss_vector(value, logits)
    if v.shape[0] != n:
        raise ValueError(f"the control variate returned {v.shape[0]} values where the loss returned {n}.")
    return v


def surrogate_loss(s: CVSamples, eta: float, beta: float) -> Tensor:
    """The scalar whose phi-gradient is g_hat = (u + eta v + beta w) / (k n), for fixed eta and beta."""
    k = s.f.shape[0]
    residual = (s.f - leave_one_out(s.f)) - eta * (s.c_tilde - leave_one_out(s.c_tilde)) - (beta if k == 1 else 0.0)
    return ((residual.detach() * s.log_p).sum() + eta * s.c_diff.sum()) / s.f.numel()


def linear_parts(
    s: CVSamples, phi: Sequence[Tensor], create_graph: bool = False
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """(u, v, w) with g_hat = (u + eta v + beta w) / (k n) (see the module docstring).

    With per-example architectures ``phi`` are the expanded logits [B, ...]: the gradient of sample b's
    log-probability lives in row b, so one backward pass yields every per-example score.
    """
    k, n = s.f.shape
    f_res = s.f - leave_one_out(s.f)
    c_res = s.c_tilde - leave_one_out(s.c_tilde)  # multiplies d log p as a value (with its graph to theta)
    if not create_graph:
        c_res = c_res.detach()
    u, v, w = ([torch.zeros_like(p) for p in phi] for _ in range(3))
    for i in range(k):  # one score gradient per sample, scaled per row
        d_log_p = _grad(s.log_p[i].sum(), phi)
        u = [a + _per_row(f_res[i], d, n) * d for a, d in zip(u, d_log_p, strict=True)]
        v = [a - _per_row(c_res[i], d, n) * d for a, d in zip(v, d_log_p, strict=True)]
        if k == 1:
            w = [a - d for a, d in zip(w, d_log_p, strict=True)]
    reparam = _grad(s.c_diff.sum(), phi, create_graph=create_graph, retain_graph=create_graph)
    return u, [a + b for a, b in zip(v, reparam, strict=True)], w


def _grad(output: Tensor, phi: Sequence[Tensor], create_graph: bool = False, retain_graph: bool = True) -> list[Tensor]:
    grads = torch.autograd.grad(output, phi, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, phi, strict=True)]


def _per_row(coef: Tensor, like: Tensor, n: int) -> Tensor:
    return coef.reshape(()) if n == 1 else coef.reshape(n, *[1] * (like.dim() - 1))


def linear_surrogate(phi: Sequence[Tensor], g_hat: Sequence[Tensor]) -> Tensor:
    """sum <g_hat.detach(), phi>: a scalar whose gradient with respect to phi is exactly g_hat."""
    return cast(Tensor, sum((g.detach() * p).sum() for g, p in zip(g_hat, phi, strict=True)))


def summed_over_examples(t: Tensor, n: int) -> Tensor:
    """A per-logits-tensor estimate as phi sees it: per-example rows (n > 1) all feed the same phi."""
    return t.sum(0) if n > 1 else t


def variance_objective(g_hat: Sequence[Tensor], n: int = 1) -> Tensor:
    """sum of squared estimates of phi's gradient: its theta-gradient equals that of the total variance."""
    return cast(Tensor, sum((summed_over_examples(g, n) ** 2).sum() for g in g_hat))
