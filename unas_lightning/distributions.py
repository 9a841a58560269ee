"""The factorial categorical architecture distribution p_phi(z) (paper Sec. 2; docs/contracts.md).

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
probability and stays finite for probabilities far below float32 resolution.

*Coupled* conditional samples reuse the race of the sample itself instead of fresh noise: with the
sample's E and b, E'_k = E_k / p_k and E'_i = E_i - p_i E_k / p_k (i != k). By the memorylessness of
exponential races these are again i.i.d. Exp(1) given argmax b = k, so zeta~ is an exact draw from
r(zeta | z); and with them b~ = b in value: zeta~ equals zeta while its gradient follows the
conditional path (the official UNAS code's common random numbers). A control variate c then needs
one evaluation, at zeta, for both c(zeta) and c(zeta~) (``coupled_conditional_rsample``). The noise is drawn in
float64 with ``Tensor.exponential_`` (no clamped uniforms, so rare categories keep their exact
probability) and the scores are cast back to the logits' dtype.

*Per-example architectures.* An architecture may carry one leading dimension B more than the logits
phi it was drawn from: then example b of a batch is scored with row set b (the official UNAS code's
CIFAR setting). That convention lives here alone: :func:`expand_rows` makes such logits and
:func:`examples_in` tells a shared architecture (None) from a per-example one (B), refusing a mix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

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
        log_e: the race's log Exp(1) noise per key, float64 (b = log p - log_e), for coupled conditionals.
    """

    z: Arch
    zeta: Arch
    b: Arch
    log_e: Arch


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
        return cast(Tensor, sum((lp * z[k]).sum() for k, lp in self.log_probs.items()))  # a sum of tensors

    def entropy(self) -> Tensor:
        """Mean entropy per categorical row (nats)."""
        rows = [-(lp.exp() * lp).sum(-1).reshape(-1) for lp in self.log_probs.values()]
        return torch.cat(rows).mean()

    def rsample(self, temperature: float | Tensor = 1.0, generator: torch.Generator | None = None) -> GumbelSample:
        """Draw z ~ p_phi together with its Gumbel-softmax relaxation zeta (same noise)."""
        tau = check_temperature(temperature)
        z, zeta, b, log_e = {}, {}, {}, {}
        for k, lp in self.log_probs.items():
            log_e[k] = torch.log(_exponential(lp, generator))
            b[k] = lp - log_e[k].to(lp.dtype)
            z[k] = one_hot_argmax(b[k].detach())
            zeta[k] = torch.softmax(b[k] / tau, dim=-1)
        return GumbelSample(z=z, zeta=zeta, b=b, log_e=log_e)

    def sample(self, generator: torch.Generator | None = None) -> Arch:
        """Draw a one-hot z ~ p_phi (no gradient)."""
        with torch.no_grad():
            return self.rsample(1.0, generator).z

    def conditional_scores(
        self, z: Mapping[str, Tensor], generator: torch.Generator | None = None, log_e: Arch | None = None
    ) -> Arch:
        """Scores b~ ~ p(b | argmax b = z), reparameterized in phi (see the module docstring).

        ``log_e``: the log Exp(1) noise to use (``coupled_noise``) instead of fresh draws.
        """
        out = {}
        for k, lp in self.log_probs.items():
            hot = z[k].to(torch.bool)
            noise = torch.log(_exponential(lp, generator)) if log_e is None else log_e[k]
            log_e_k = noise.masked_fill(~hot, 0.0).sum(-1, keepdim=True)
            lp64 = lp.to(torch.float64)
            others = -torch.logaddexp(noise - lp64, log_e_k)
            out[k] = torch.where(hot, -log_e_k, others).to(lp.dtype)
        return out

    def coupled_noise(self, sample: GumbelSample) -> Arch:
        """The race noise E' of ``sample`` given its z (module docstring): i.i.d. Exp(1), and b~ = b."""
        out = {}
        for k, lp in self.log_probs.items():
            hot = sample.z[k].to(torch.bool)
            lp64, log_e = lp.detach().to(torch.float64), sample.log_e[k]
            b = lp64 - log_e
            b_max = b.masked_fill(~hot, 0.0).sum(-1, keepdim=True)
            # log(E_i - p_i E_k / p_k) = log E_i + log(1 - exp(b_i - b_k)), b_i < b_k (ties: measure zero)
            others = log_e + torch.log(-torch.expm1((b - b_max).clamp(max=-_TINY)))
            out[k] = torch.where(hot, log_e - lp64, others)
        return out

    def conditional_rsample(
        self, z: Mapping[str, Tensor], temperature: float | Tensor = 1.0, generator: torch.Generator | None = None
    ) -> Arch:
        """zeta~ ~ r_phi(zeta | z): the relaxed sample conditioned on the discrete sample z."""
        tau = check_temperature(temperature)
        return {k: torch.softmax(b / tau, dim=-1) for k, b in self.conditional_scores(z, generator).items()}

    def coupled_conditional_rsample(self, sample: GumbelSample, temperature: float | Tensor = 1.0) -> Arch:
        """zeta~ ~ r_phi(zeta | z) from ``sample``'s own race: equal to ``sample.zeta`` in value (for the same
        temperature), with the conditional path's gradient (module docstring)."""
        tau = check_temperature(temperature)
        scores = self.conditional_scores(sample.z, log_e=self.coupled_noise(sample))
        return {k: torch.softmax(b / tau, dim=-1) for k, b in scores.items()}


def one_hot_argmax(scores: Tensor) -> Tensor:
    """Exact one-hot of the argmax of the last dimension, in the dtype of ``scores``."""
    idx = scores.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(scores).scatter_(-1, idx, 1.0)


def expand_rows(logits: Mapping[str, Tensor], n: int) -> Arch:
    """Per-example logits: every tensor [..] as a view [n, ..] (one row set per example, all equal).

    Examples:
        >>> import torch
        >>> expand_rows({"op": torch.zeros(2, 3)}, 4)["op"].shape
        torch.Size([4, 2, 3])
    """
    return {k: v.expand(n, *v.shape) for k, v in logits.items()}


def examples_in(arch: Mapping[str, Tensor], reference: Mapping[str, Tensor]) -> int | None:
    """B when ``arch`` holds one row set per example (a leading dimension more than ``reference``, the
    logits it belongs to), None when it is one shared architecture.

    Raises ``ValueError`` when some keys carry the leading dimension and others do not, or B differs.

    Examples:
        >>> import torch
        >>> phi = {"op": torch.zeros(2, 3)}
        >>> examples_in({"op": torch.zeros(2, 3)}, phi), examples_in({"op": torch.zeros(5, 2, 3)}, phi)
        (None, 5)
    """
    sizes = set()
    for k, v in arch.items():
        extra = v.dim() - reference[k].dim()
        if extra not in (0, 1):
            raise ValueError(
                f"architecture key {k!r} has shape {tuple(v.shape)}; the logits have {tuple(reference[k].shape)}."
            )
        sizes.add(v.shape[0] if extra else None)
    if len(sizes) > 1:
        raise ValueError(
            f"an architecture mixes shared and per-example rows (leading sizes {sorted(map(str, sizes))})."
        )
    return next(iter(sizes), None)


def detach(arch: Mapping[str, Tensor]) -> Arch:
    """A copy of an architecture mapping with every tensor detached."""
    return {k: v.detach() for k, v in arch.items()}
