"""The unordered set estimator (Kool, van Hoof and Welling, ICLR 2020): REINFORCE over k distinct samples.

Sampling k architectures *without replacement* never spends two evaluations on the same one, which is
what an expensive or table-valued loss wants. The k samples S (an unordered set) give an unbiased
estimate of the gradient with a built-in baseline:

    g = sum_{s in S} p(s) R(S, s) [L(s) - b(S, s)] d log p(s)

    R(S, s)  = P^{D\\s}(S \\ s) / P(S)                      (leave-one-out ratio)
    b(S, s)  = p(s) L(s) + sum_{s' in S, s' != s} p(s') P^{D\\{s,s'}}(S \\ {s,s'}) / P^{D\\s}(S \\ s) L(s')

P(S) is the probability of drawing the set S (in any order) and P^{D\\E} the same for the distribution
renormalized without the architectures E. Why b keeps g unbiased: given that s is drawn first, the
rest of S is a sample without replacement from D\\s, and b(S, s) is then an unbiased estimate of
E_p[L] = p(s) L(s) + (1 - p(s)) E_{p^{D\\s}}[L], the same constant for every s; so its term averages to
E_p[L] * sum_s dp(s) = 0.

The set is drawn exactly, without enumerating the space, by stochastic beam search (Kool, van Hoof and
Welling, ICML 2019): the Gumbel-top-k trick over the joint distribution, row by row. Every partial
architecture on the beam gets its children's log-probabilities perturbed by Gumbel noise, conditioned
(truncated) so that the children's maximum equals the parent's perturbed value; the k largest stay on the
beam. After the last row the k architectures kept are distributed as the top k of independently
Gumbel-perturbed joint log-probabilities, i.e. as k draws without replacement, in any space (DARTS:
10^19 cells) at a cost of k x (categories) per row. P(S) is summed over the k! orders of the set
(Plackett-Luce): exact and stable for the small k this estimator is used with (k <= 8).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping

import torch
from torch import Tensor

from unas_lightning.arch_loss import as_arch_loss
from unas_lightning.distributions import ArchDistribution
from unas_lightning.estimators.base import BlackBox, Estimator, EstimatorOutput, LossFn, loss_vector


def set_probability(p: Tensor, excluded: float = 0.0) -> Tensor:
    """P(the set with probabilities ``p`` is drawn, in any order) without replacement from a distribution
    from which mass ``excluded`` has been removed (and the rest renormalized); 1 for the empty set.

    Examples:
        >>> import torch
        >>> float(set_probability(torch.tensor([0.5, 0.3], dtype=torch.float64)))  # 0.5*0.3/0.5 + 0.3*0.5/0.7
        0.5142857142857142
    """
    k = p.numel()
    if k == 0:
        return torch.ones((), dtype=p.dtype)
    q = p[_orders(k)]  # probabilities in each order
    before = torch.cumsum(q, 1) - q  # mass drawn before each position
    return (q / (1.0 - excluded - before)).prod(1).sum()


def stochastic_beam_search(
    log_probs: list[Tensor], k: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """k distinct draws without replacement from the product of the categoricals ``log_probs`` (one
    [K_r] row of log-probabilities each), without enumerating the product space (module docstring).

    Returns the choices [k', R] (one category per row; k' = min(k, the number of architectures)) and
    their joint log-probabilities [k'], in the order of their perturbed values (the first is a plain draw).

    Examples:
        >>> import torch
        >>> rows = [torch.log_softmax(torch.zeros(3, dtype=torch.float64), -1)] * 2
        >>> choices, log_p = stochastic_beam_search(rows, 4, torch.Generator().manual_seed(0))
        >>> choices.shape, len({tuple(c) for c in choices.tolist()}), round(float(log_p.exp().sum()), 4)
        (torch.Size([4, 2]), 4, 0.4444)
    """
    dtype = log_probs[0].dtype if log_probs else torch.float64
    choices = torch.zeros(1, 0, dtype=torch.long)
    phi = torch.zeros(1, dtype=dtype)  # joint log-probability of each partial architecture on the beam
    g = torch.zeros(1, dtype=dtype)  # its (truncated) Gumbel-perturbed value
    for lp in log_probs:
        child_phi = phi[:, None] + lp[None, :].to(dtype)  # [beam, K]
        u = torch.rand(child_phi.shape, dtype=dtype, generator=generator).clamp(1e-300, 1.0)
        child_g = child_phi - torch.log(-torch.log(u))
        child_g = _truncate(child_g, g[:, None])  # each parent's children: max equals the parent's value
        flat = child_g.reshape(-1)
        top = torch.topk(flat, min(k, flat.numel())).indices
        parent, category = top // lp.numel(), top % lp.numel()
        choices = torch.cat([choices[parent], category[:, None]], 1)
        phi, g = child_phi.reshape(-1)[top], flat[top]
    return choices, phi


def _truncate(g: Tensor, target: Tensor) -> Tensor:
    """Gumbels ``g`` [B, K] conditioned on their row maximum being ``target`` [B, 1] (numerically stable form
    of -log(exp(-target) - exp(-max g) + exp(-g)), Kool et al. 2019, appendix B)."""
    z = g.max(-1, keepdim=True).values
    v = target - g + _log1mexp(g - z)
    return target - torch.relu(v) - torch.log1p(torch.exp(-v.abs()))


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near 0 and far below it."""
    x = x.clamp(max=0.0)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@functools.cache
def _orders(k: int) -> Tensor:
    """The k! orders of k items, [k!, k]."""
    return torch.tensor(list(itertools.permutations(range(k))))


class UnorderedSet(Estimator, BlackBox):
    """Unbiased gradient from ``num_samples`` distinct architectures and the built-in baseline (module docstring).

    Black-box: ``loss_fn`` is evaluated once per sample, at one-hot architectures, without gradient (a
    table lookup, a measured latency). Shared architectures only (no per-example rows).

    Cost: ``num_samples`` evaluations of ``loss_fn`` per step (fewer only when the distribution has fewer
    architectures than that).

    Args:
        num_samples: k, the size of the sampled set (2 to 8).

    Examples:
        >>> import torch
        >>> table = torch.tensor([3.0, 1.0, 2.0])
        >>> logits = {"op": torch.zeros(3, requires_grad=True)}
        >>> out = UnorderedSet(num_samples=2).surrogate(logits, lambda a: table[int(a["op"].argmax())])
        >>> out.loss.backward(); logits["op"].grad.shape
        torch.Size([3])
    """

    def __init__(self, num_samples: int = 4):
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 2 <= num_samples <= 8:
            raise ValueError(f"num_samples must be an integer from 2 to 8, got {num_samples!r}.")
        self.num_samples = num_samples

    def hparams(self) -> dict[str, object]:
        return {"num_samples": self.num_samples}

    def surrogate(self, logits: Mapping[str, Tensor], loss_fn: LossFn) -> EstimatorOutput:
        loss_all = as_arch_loss(loss_fn)
        rows = [(key, r) for key, v in logits.items() for r in range(v.reshape(-1, v.shape[-1]).shape[0])]
        log_probs = [
            torch.log_softmax(logits[key].detach().double().reshape(-1, logits[key].shape[-1])[r], -1)
            for key, r in rows
        ]
        choices, log_p_joint = stochastic_beam_search(log_probs, self.num_samples)
        archs = [self._arch(c, logits, rows) for c in choices.tolist()]
        with torch.no_grad():
            f = torch.stack([loss_vector(v, logits).double() for v in loss_all.many(archs)])
        if f.shape[1] != 1:
            raise ValueError("UnorderedSet takes shared architectures: loss_fn must return a scalar.")
        f = f[:, 0]
        p = log_p_joint.exp()
        weights = self._weights(p, f)  # p(s) R(S, s) (L(s) - b(S, s)), detached
        dist = ArchDistribution(logits)
        log_p = torch.stack([dist.log_prob(a) for a in archs])
        loss = (weights.to(log_p.dtype) * log_p).sum()
        return EstimatorOutput(loss=loss, arch=archs[0], value=f[0].to(log_p.dtype).detach())

    @staticmethod
    def _weights(p: Tensor, f: Tensor) -> Tensor:
        k = p.numel()
        if k == 1:  # the whole space is one architecture: nothing to estimate
            return torch.zeros(1, dtype=p.dtype)
        everything = set_probability(p)
        idx = list(range(k))
        out = []
        for i in idx:
            rest = [j for j in idx if j != i]
            without_i = set_probability(p[rest], excluded=float(p[i]))
            ratio = without_i / everything
            baseline = p[i] * f[i]
            for j in rest:
                others = [m for m in rest if m != j]
                both = set_probability(p[others], excluded=float(p[i] + p[j]))
                baseline = baseline + p[j] * both / without_i * f[j]
            out.append(p[i] * ratio * (f[i] - baseline))
        return torch.stack(out)

    @staticmethod
    def _arch(digits: list[int], logits: Mapping[str, Tensor], rows: list[tuple[str, int]]) -> dict[str, Tensor]:
        arch = {key: torch.zeros_like(v) for key, v in logits.items()}
        flat = {key: a.view(-1, a.shape[-1]) for key, a in arch.items()}
        for (key, r), d in zip(rows, digits, strict=True):
            flat[key][r, d] = 1.0
        return {key: a.detach() for key, a in arch.items()}
