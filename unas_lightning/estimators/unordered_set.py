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

The set is drawn exactly by the Gumbel-top-k trick over the joint distribution of all rows, and P(S) is
summed over the k! orders of the set (Plackett-Luce): exact and stable for the small k this estimator
is used with (k <= 8). The joint distribution is enumerated, so the space must be small:
NAS-Bench-201's 15,625 cells, not the DARTS space (use ``Reinforce(num_samples=k)`` there).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import Tensor

from unas_lightning.distributions import ArchDistribution
from unas_lightning.estimators.base import BlackBox, Estimator, EstimatorOutput, loss_vector
from unas_lightning.losses import as_arch_loss


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
        max_architectures: the largest joint space it enumerates.

    Examples:
        >>> import torch
        >>> table = torch.tensor([3.0, 1.0, 2.0])
        >>> logits = {"op": torch.zeros(3, requires_grad=True)}
        >>> out = UnorderedSet(num_samples=2).surrogate(logits, lambda a: table[int(a["op"].argmax())])
        >>> out.loss.backward(); logits["op"].grad.shape
        torch.Size([3])
    """

    def __init__(self, num_samples: int = 4, max_architectures: int = 1_000_000):
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 2 <= num_samples <= 8:
            raise ValueError(f"num_samples must be an integer from 2 to 8, got {num_samples!r}.")
        self.num_samples, self.max_architectures = num_samples, int(max_architectures)

    def hparams(self):
        return {"num_samples": self.num_samples}

    def _joint(self, logits) -> tuple[Tensor, list[tuple[str, int]]]:
        """log p of every architecture [N] (rows in order, the first most significant) and the rows."""
        rows = [(k, r) for k, v in logits.items() for r in range(v.reshape(-1, v.shape[-1]).shape[0])]
        sizes = [logits[k].shape[-1] for k, _ in rows]
        total = math.prod(sizes)
        if total > self.max_architectures:
            raise ValueError(
                f"UnorderedSet enumerates the joint space of the architecture: {total:,} architectures exceed "
                f"max_architectures={self.max_architectures:,}. It suits small spaces such as NAS-Bench-201's "
                "15,625 cells; use Reinforce(num_samples=k) for larger ones."
            )
        joint = torch.zeros(1, dtype=torch.float64)
        for k, r in rows:
            lp = torch.log_softmax(logits[k].detach().double().reshape(-1, logits[k].shape[-1])[r], -1)
            joint = (joint[:, None] + lp[None, :]).reshape(-1)
        return joint, rows

    def surrogate(self, logits, loss_fn):
        loss_fn = as_arch_loss(loss_fn)
        log_joint, rows = self._joint(logits)
        k = min(self.num_samples, log_joint.numel())
        gumbel = -torch.log(-torch.log(torch.rand_like(log_joint).clamp_min(1e-300)))
        picks = torch.topk(log_joint + gumbel, k).indices  # a set drawn without replacement
        sizes = [logits[key].shape[-1] for key, _ in rows]
        archs = [self._arch(int(i), logits, rows, sizes) for i in picks]
        with torch.no_grad():
            f = torch.stack([loss_vector(v, logits).double() for v in loss_fn.many(archs)])
        if f.shape[1] != 1:
            raise ValueError("UnorderedSet takes shared architectures: loss_fn must return a scalar.")
        f = f[:, 0]
        p = log_joint[picks].exp()
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
    def _arch(index: int, logits, rows, sizes) -> dict[str, Tensor]:
        digits = []
        for size in reversed(sizes):
            index, d = divmod(index, size)
            digits.append(d)
        digits.reverse()
        arch = {key: torch.zeros_like(v) for key, v in logits.items()}
        flat = {key: a.view(-1, a.shape[-1]) for key, a in arch.items()}
        for (key, r), d in zip(rows, digits, strict=True):
            flat[key][r, d] = 1.0
        return {key: a.detach() for key, a in arch.items()}
