"""The factorial categorical architecture distribution p_phi(z) (paper Sec. 2, DESIGN Contract 1).

An architecture is a mapping ``name -> one-hot tensor [..., K]``; its distribution is a mapping
``name -> logits tensor [..., K]`` (phi), one independent categorical per row, so that
p_phi(z) = prod_rows softmax(phi_row)[z_row].

Sampling uses the Gumbel-max trick in the "exponential race" form. With E_k ~ Exp(1) i.i.d. and
log-probabilities logp_k, the perturbed scores are b_k = logp_k - log E_k (Gumbel(logp_k) noise),
the discrete sample is z = one_hot(argmax_k b_k) (exactly one-hot, never a hard softmax) and the
relaxed (Gumbel-softmax / concrete) sample is zeta = softmax(b / tau).

The conditional relaxation r(zeta | z) of REBAR (Tucker et al. 2017) draws scores b~ that have the
same law as b given argmax b = z. For the chosen category k and fresh E_i ~ Exp(1):

    b~_k = -log E_k,      b~_i = -log(E_i / p_i + E_k)   (i != k)

computed here in log space as b~_i = -logaddexp(log E_i - logp_i, log E_k), which never divides by a
probability and stays finite for probabilities far below float32 resolution. The noise is drawn in
float64 with ``Tensor.exponential_`` (no clamped uniforms, so rare categories keep their exact
probability) and the scores are cast back to the logits' dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

Arch = dict[str, Tensor]

_TINY = torch.finfo(torch.float64).tiny


def _exponential(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Exp(1) noise in float64 with the shape and device of ``like``.

    ``exponential_`` returns 0 with probability ~2^-53; that single value is lifted to the smallest
    normal float64 so that ``log`` stays finite. No other value is touched.
    """
    e = torch.empty(like.shape, dtype=torch.float64, device=like.device)
    e.exponential_(generator=generator)
    return e.clamp_min_(_TINY)


def check_temperature(temperature: float | Tensor) -> float | Tensor:
    """Return ``temperature`` as a float, or stop with a message if it is not a number > 0.

    A tensor (a learned temperature) is passed through unchecked so that gradients reach it.
    """
    if isinstance(temperature, Tensor):
        return temperature
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}; the paper's REBAR uses 0.4.")
    return float(temperature)


@dataclass
class GumbelSample:
    """One draw from p_phi with its relaxation.

    Attributes:
        z: one-hot discrete sample per key (no gradient).
        zeta: relaxed sample softmax(b / tau) per key (differentiable w.r.t. phi).
        b: the Gumbel-perturbed log-probabilities per key (differentiable w.r.t. phi).
    """

    z: Arch
    zeta: Arch
    b: Arch


class ArchDistribution:
    """Factorial categorical distribution over architectures, p_phi(z) = prod softmax(phi).

    Gradients flow from every relaxed quantity back into the logits, so the same object serves the
    score-function (``log_prob``) and reparameterized (``rsample``, ``conditional_rsample``) parts
    of the estimators.

    Args:
        logits: mapping ``name -> Tensor[..., K]``; any leading shape is a batch of independent rows.

    Examples:
        >>> import torch
        >>> d = ArchDistribution({"op": torch.zeros(2, 3)})
        >>> s = d.rsample(temperature=0.5)
        >>> s.z["op"].sum(-1).tolist()
        [1.0, 1.0]
    """

    def __init__(self, logits: Mapping[str, Tensor]):
        self.logits = dict(logits)
        self.log_probs = {k: torch.log_softmax(v, dim=-1) for k, v in self.logits.items()}

    def probs(self) -> Arch:
        """softmax(phi) per key: the DARTS relaxation and the per-row marginals."""
        return {k: lp.exp() for k, lp in self.log_probs.items()}

    def mode(self) -> Arch:
        """The most probable architecture (one-hot argmax of every row)."""
        return {k: one_hot_argmax(lp.detach()) for k, lp in self.log_probs.items()}

    def log_prob(self, z: Mapping[str, Tensor]) -> Tensor:
        """log p_phi(z) summed over all rows of all keys (a scalar)."""
        return sum((lp * z[k]).sum() for k, lp in self.log_probs.items())

    def entropy(self) -> Tensor:
        """Mean entropy per categorical row (nats)."""
        rows = [-(lp.exp() * lp).sum(-1).reshape(-1) for lp in self.log_probs.values()]
        return torch.cat(rows).mean()

    def rsample(self, temperature: float | Tensor = 1.0, generator: torch.Generator | None = None) -> GumbelSample:
        """Draw z ~ p_phi together with its Gumbel-softmax relaxation zeta (same noise)."""
        tau = check_temperature(temperature)
        z, zeta, b = {}, {}, {}
        for k, lp in self.log_probs.items():
            noise = -torch.log(_exponential(lp, generator)).to(lp.dtype)
            b[k] = lp + noise
            z[k] = one_hot_argmax(b[k].detach())
            zeta[k] = torch.softmax(b[k] / tau, dim=-1)
        return GumbelSample(z=z, zeta=zeta, b=b)

    def sample(self, generator: torch.Generator | None = None) -> Arch:
        """Draw a one-hot z ~ p_phi (no gradient)."""
        with torch.no_grad():
            return self.rsample(1.0, generator).z

    def conditional_scores(self, z: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Arch:
        """Scores b~ ~ p(b | argmax b = z), reparameterized in phi (see the module docstring)."""
        out = {}
        for k, lp in self.log_probs.items():
            hot = z[k].to(torch.bool)
            log_e = torch.log(_exponential(lp, generator))
            log_e_k = log_e.masked_fill(~hot, 0.0).sum(-1, keepdim=True)
            lp64 = lp.to(torch.float64)
            others = -torch.logaddexp(log_e - lp64, log_e_k)
            out[k] = torch.where(hot, -log_e_k, others).to(lp.dtype)
        return out

    def conditional_rsample(
        self, z: Mapping[str, Tensor], temperature: float | Tensor = 1.0, generator: torch.Generator | None = None
    ) -> Arch:
        """zeta~ ~ r_phi(zeta | z): the relaxed sample conditioned on the discrete sample z."""
        tau = check_temperature(temperature)
        return {k: torch.softmax(b / tau, dim=-1) for k, b in self.conditional_scores(z, generator).items()}


def one_hot_argmax(scores: Tensor) -> Tensor:
    """Exact one-hot of the argmax of the last dimension, in the dtype of ``scores``."""
    idx = scores.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


def detach(arch: Mapping[str, Tensor]) -> Arch:
    """A copy of an architecture mapping with every tensor detached."""
    return {k: v.detach() for k, v in arch.items()}
