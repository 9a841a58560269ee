"""What an estimator evaluates: a loss of an architecture, L(arch), with two optional abilities.

An estimator's ``loss_fn`` may be any callable ``arch -> Tensor`` (a scalar, or per-example losses [B]
when the architecture's rows carry a leading per-example dimension). A loss that can do more says so
by subclassing :class:`ArchLoss`, and estimators reach its abilities through it, never by probing:

* ``many(archs)``: the values at several architectures, in order, possibly in one pass (the search
  objective runs REBAR's zeta and zeta~ as one supernet pass);
* ``relaxed()``: the loss a control variate should evaluate at relaxed architectures (the search
  objective on a sub-batch, ``SearchModule(cv_examples=m)``): any differentiable function keeps
  REBAR and RELAX unbiased, the closer it tracks the loss the lower the variance;
* ``logs()``: what to log about the evaluations made so far (the parts of the search objective).

:func:`as_arch_loss` turns a plain callable into an ``ArchLoss`` with the default abilities.

Examples:
    >>> import torch
    >>> loss = as_arch_loss(lambda arch: arch["op"].sum())
    >>> [float(v) for v in loss.many([{"op": torch.ones(2)}, {"op": torch.zeros(2)}])]
    [2.0, 0.0]
    >>> loss.relaxed() is loss
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from torch import Tensor

from unas_lightning.distributions import Arch


class ArchLoss(ABC):
    """L(arch) with the optional abilities ``many``, ``relaxed`` and ``logs`` (see the module docstring)."""

    @abstractmethod
    def __call__(self, arch: Arch) -> Tensor:
        """The loss at one architecture (one-hot or relaxed rows)."""

    def many(self, archs: Sequence[Arch]) -> list[Tensor]:
        """The loss at each architecture, in order (default: one call each)."""
        return [self(arch) for arch in archs]

    def relaxed(self) -> ArchLoss:
        """What a control variate evaluates at relaxed architectures (default: this loss itself)."""
        return self

    def logs(self) -> dict[str, Tensor]:
        """What to log about the evaluations so far (default: nothing)."""
        return {}


class FunctionLoss(ArchLoss):
    """A plain callable as an :class:`ArchLoss`."""

    def __init__(self, fn: Callable[[Arch], Tensor]):
        self.fn = fn

    def __call__(self, arch: Arch) -> Tensor:
        return self.fn(arch)


class WithRelaxed(ArchLoss):
    """``loss`` whose control variate evaluates ``relaxed_loss`` instead (e.g. the same loss on a sub-batch).

    Examples:
        >>> import torch
        >>> full = WithRelaxed(lambda a: a["op"].sum(), lambda a: 0.5 * a["op"].sum())
        >>> float(full({"op": torch.ones(2)})), float(full.relaxed()({"op": torch.ones(2)}))
        (2.0, 1.0)
    """

    def __init__(self, loss: Callable[[Arch], Tensor], relaxed_loss: Callable[[Arch], Tensor]):
        self.loss, self.relaxed_loss = as_arch_loss(loss), as_arch_loss(relaxed_loss)

    def __call__(self, arch: Arch) -> Tensor:
        return self.loss(arch)

    def many(self, archs: Sequence[Arch]) -> list[Tensor]:
        return self.loss.many(archs)

    def relaxed(self) -> ArchLoss:
        return self.relaxed_loss

    def logs(self) -> dict[str, Tensor]:
        return self.loss.logs()


def as_arch_loss(loss_fn: Callable[[Arch], Tensor] | ArchLoss) -> ArchLoss:
    """``loss_fn`` itself when it is an :class:`ArchLoss`, else the callable wrapped in one."""
    return loss_fn if isinstance(loss_fn, ArchLoss) else FunctionLoss(loss_fn)
