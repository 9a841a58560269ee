"""The estimator contract (docs/contracts.md): what tests, benchmarks and users' code call.

An estimator turns the architecture logits phi and a loss function L(z) into a surrogate scalar whose
``backward()`` leaves in ``phi.grad`` one Monte-Carlo estimate of d/dphi E_{p_phi(z)}[L(z)].
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from torch import Tensor, nn

from unas_lightning.distributions import Arch

LossFn = Callable[[Arch], Tensor]  # or an ``ArchLoss``


@dataclass
class EstimatorOutput:
    """What ``Estimator.surrogate`` returns.

    Attributes:
        loss: scalar surrogate; ``loss.backward()`` accumulates the gradient estimate into phi.
        arch: the sampled discrete architecture (one-hot rows). Relaxation-only estimators
            (``Softmax``, ``GumbelSoftmax``) report the argmax of their relaxed sample.
        value: the detached loss the estimator observed: L(z) at ``arch`` for the unbiased
            estimators, the relaxed loss for the relaxation-only ones.
    """

    loss: Tensor
    arch: Arch
    value: Tensor


class Estimator(nn.Module):
    """Base class of the gradient estimators of d/dphi E_{p_phi(z)}[L(z)] (paper Sec. 3.1).

    Subclasses implement :meth:`surrogate`. ``loss_fn(arch)`` takes a mapping with the same keys and
    shapes as ``logits`` (one-hot or relaxed rows) and returns a scalar.

    *Per-example architectures.* When every logits tensor carries a leading batch dimension B (the
    same phi expanded, ``phi.expand(B, *phi.shape)``) and ``loss_fn`` returns the vector [B] of
    per-example losses, example b is scored with its own architecture z_b: the unbiased estimators
    pair each example's loss with its own log p(z_b) and report the average of the B per-example
    estimates (:func:`loss_vector` and :func:`log_prob_per_example` do the bookkeeping). An estimator that learns
    (a baseline, a temperature, a surrogate) updates that state inside ``surrogate`` and keeps it in
    buffers or parameters of its own, so it is saved in checkpoints with the search module.

    *Abilities of the loss.* ``loss_fn`` may be a plain callable or an ``unas_lightning.arch_loss.ArchLoss``,
    which can evaluate several architectures in one pass (``many``; ``SearchModule``'s objective runs
    REBAR's zeta and zeta~ as one supernet pass) and name the cheaper loss a control variate should
    evaluate (``relaxed``). An estimator reaches them through ``as_arch_loss(loss_fn)``, which gives a
    plain callable the default abilities.

    The caller steps phi only.

    Every estimator can be built with no arguments. Select one in a config with
    ``class_path: unas_lightning.estimators.Rebar`` or ``class_path: mypkg.MyEstimator``.

    Examples:
        A straight-through Gumbel estimator in a user's own package::

            from unas_lightning.estimators import Estimator, EstimatorOutput
            from unas_lightning.distributions import ArchDistribution

            class StraightThrough(Estimator):
                def surrogate(self, logits, loss_fn):
                    s = ArchDistribution(logits).rsample(temperature=1.0)
                    hard = {k: s.z[k] - s.zeta[k].detach() + s.zeta[k] for k in s.z}
                    loss = loss_fn(hard)
                    return EstimatorOutput(loss=loss, arch=s.z, value=loss.detach())
    """

    def surrogate(self, logits: Mapping[str, Tensor], loss_fn: LossFn) -> EstimatorOutput:
        raise NotImplementedError

    def prepare(self, logits: Mapping[str, Tensor]) -> None:
        """Create state shaped like the architecture before training (called by ``SearchModule``).

        Lazily shaped state (e.g. RELAX's linear surrogate) must exist before optimizers, DDP and
        checkpoint loading see the module. The default does nothing.
        """

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    def hparams(self) -> dict[str, object]:
        """The estimator's settings, for logging and ``repr``."""
        return {}


class BlackBox(ABC):  # noqa: B024 (an interface without methods: a declared ability)
    """An estimator that evaluates ``loss_fn`` only at one-hot architectures and never differentiates it.

    Its ``loss_fn`` may be a table lookup or a measured latency: hardware costs accept only such
    estimators (``Reinforce``, ``Relax``, ``IndeCateR``). Declare it by inheriting it::

        class MyBlackBoxEstimator(Estimator, BlackBox): ...
    """


def loss_vector(loss: Tensor, logits: Mapping[str, Tensor]) -> Tensor:
    """``loss_fn``'s result as a vector [n]: n = 1 for a scalar, n = B for per-example losses.

    A vector loss must match the leading batch dimension of every logits tensor.
    """
    if not isinstance(loss, Tensor):
        raise ValueError(f"loss_fn(arch) must return a tensor, got {type(loss).__name__}.")
    if loss.numel() == 1:
        return loss.reshape(1)
    n = loss.shape[0]
    if loss.dim() != 1 or any(v.dim() < 2 or v.shape[0] != n for v in logits.values()):
        shapes = {k: tuple(v.shape) for k, v in logits.items()}
        raise ValueError(
            f"loss_fn(arch) returned shape {tuple(loss.shape)}: return a scalar, or per-example losses [B] "
            f"with logits expanded to a leading batch dimension B (got logits shapes {shapes})."
        )
    return loss


def log_prob_per_example(log_probs: Mapping[str, Tensor], z: Mapping[str, Tensor], n: int) -> Tensor:
    """log p(z) as [n]: summed over every row (n = 1) or per leading batch index (n = B)."""
    if n == 1:
        return cast(Tensor, sum((lp * z[k]).sum() for k, lp in log_probs.items())).reshape(1)
    return cast(Tensor, sum((lp * z[k]).reshape(n, -1).sum(1) for k, lp in log_probs.items()))


def strip_batch(logits: Mapping[str, Tensor], n: int) -> dict[str, Tensor]:
    """The logits without their leading per-example dimension (unchanged for n = 1)."""
    return {k: v[0] if n > 1 else v for k, v in logits.items()}


__all__ = [
    "BlackBox",
    "Estimator",
    "EstimatorOutput",
    "LossFn",
    "log_prob_per_example",
    "loss_vector",
    "strip_batch",
]
