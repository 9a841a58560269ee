"""REINFORCE (paper Eq. 1/2): moving-average baseline, or k samples with leave-one-out baselines (RLOO)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from unas_lightning.arch_loss import as_arch_loss
from unas_lightning.distributions import ArchDistribution
from unas_lightning.estimators._leave_one_out import leave_one_out
from unas_lightning.estimators.base import (
    BlackBox,
    Estimator,
    EstimatorOutput,
    LossFn,
    log_prob_per_example,
    loss_vector,
)


class Reinforce(Estimator, BlackBox):
    """Score-function estimator (L(z) - c) d/dphi log p_phi(z), z ~ p_phi.

    With ``num_samples=1`` the baseline c is an exponential moving average of past losses, computed
    before the current sample is seen, so it is constant given z (Eq. 2 with d/dphi E[c] = 0).
    With ``num_samples=k > 1`` (RLOO, Kool et al. 2019) sample i uses the mean loss of the other k - 1
    samples as its baseline, which is independent of z_i, so the average of the k terms is unbiased:

        g = 1/k sum_i (L(z_i) - 1/(k-1) sum_{j != i} L(z_j)) d/dphi log p_phi(z_i)

    ``loss_fn`` is evaluated at one-hot z only and without gradient, so it may be any black box
    (a table lookup, a measured latency). Cost: k discrete evaluations per step.

    Args:
        baseline_decay: EMA decay of the k = 1 baseline in [0, 1); 0 keeps only the last loss.
        use_baseline: set False for the plain Eq. 1 estimator (no baseline at all).
        num_samples: samples per estimate (k); k > 1 uses leave-one-out baselines instead of the EMA.

    Examples:
        >>> import torch
        >>> logits = {"op": torch.zeros(3, requires_grad=True)}
        >>> table = [3.0, 1.0, 2.0]
        >>> out = Reinforce(num_samples=4).surrogate(logits, lambda a: torch.tensor(table[int(a["op"].argmax())]))
        >>> out.loss.backward(); logits["op"].grad.shape
        torch.Size([3])
    """

    baseline: Tensor  # buffers
    baseline_ready: Tensor

    def __init__(self, baseline_decay: float = 0.9, use_baseline: bool = True, num_samples: int = 1):
        super().__init__()
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must lie in [0, 1), got {baseline_decay}.")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
        self.baseline_decay = float(baseline_decay)
        self.use_baseline = bool(use_baseline)
        self.num_samples = num_samples
        self.register_buffer("baseline", torch.zeros(()))
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))

    def hparams(self) -> dict[str, object]:
        return {
            "baseline_decay": self.baseline_decay,
            "use_baseline": self.use_baseline,
            "num_samples": self.num_samples,
        }

    @torch.no_grad()
    def _update_baseline(self, value: torch.Tensor) -> None:
        value = value.to(self.baseline)
        if bool(self.baseline_ready):
            self.baseline.lerp_(value, 1.0 - self.baseline_decay)
        else:
            self.baseline.copy_(value)
            self.baseline_ready.fill_(True)

    def baselines(self, f: torch.Tensor) -> torch.Tensor | float:
        """c for the losses ``f`` [k, n]: leave-one-out means (k > 1), the EMA (k = 1) or 0."""
        k = f.shape[0]
        if not self.use_baseline:
            return 0.0
        if k > 1:
            return leave_one_out(f)
        return self.baseline.clone() if bool(self.baseline_ready) else 0.0

    def surrogate(self, logits: Mapping[str, Tensor], loss_fn: LossFn) -> EstimatorOutput:
        loss = as_arch_loss(loss_fn)
        dist = ArchDistribution(logits)
        zs, values = [], []
        for _ in range(self.num_samples):
            z = dist.sample()
            with torch.no_grad():
                values.append(loss_vector(loss(z), logits).detach())
            zs.append(z)
        f = torch.stack(values)  # [k, n]
        n = f.shape[1]
        log_p = torch.stack([log_prob_per_example(dist.log_probs, z, n) for z in zs])
        surrogate = ((f - self.baselines(f)) * log_p).mean()
        if self.use_baseline and self.num_samples == 1:
            self._update_baseline(f.mean())
        return EstimatorOutput(loss=surrogate, arch=zs[0], value=f[0].mean())
