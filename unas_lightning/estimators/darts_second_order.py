r"""DARTS second order (Liu et al. 2019, Eq. 6-8): the relaxed loss after a virtual w-step.

DARTS's bilevel problem asks for phi that minimise L_val(w*(phi), phi), w*(phi) the weights trained at
phi. Its second-order approximation replaces w* by one virtual SGD step of step size xi on L_train,

    w' = w - xi * grad_w L_train(w, alpha),      alpha = softmax(phi / tau),

and differentiates L(w', alpha) (L the search objective, L_val in DARTS) through that step:

    dL/dalpha = grad_alpha L(w', alpha)
                - xi * (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps),

w+- = w +- eps * grad_w' L(w', alpha), eps = 0.01 / ||grad_w' L(w', alpha)|| (the Hessian-vector product
by finite differences, Eq. 8). xi = 0 is the first-order DARTS gradient (``Softmax``). Like ``Softmax``
it is biased for E_{p_phi}[L(z)] and reports the argmax architecture.

Cost: about four relaxed forward-backward passes of the supernet per phi-step (one for the first
order). w is changed in place for the virtual steps and restored exactly before ``surrogate`` returns
(the caller still steps phi only). It needs a loss that exposes the step's batches and weights: the
``StepObjective`` of ``SearchModule`` (``UnrollableLoss`` below); shared architectures only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from unas_lightning.distributions import Arch
from unas_lightning.estimators.base import EstimatorOutput, LossFn
from unas_lightning.estimators.softmax import Softmax


@runtime_checkable
class UnrollableLoss(Protocol):
    """A loss of the architecture that can also be taken with w free or on the training batch alone."""

    weights: Sequence[Tensor]

    def __call__(self, arch: Arch) -> Tensor: ...

    def variant(self, objective: str | None = None, hold_weights: bool = True) -> UnrollableLoss: ...


class DartsSecondOrder(Softmax):
    """The DARTS gradient through one virtual w-step (second order); see the module docstring.

    Args:
        temperature: tau of the softmax (DARTS: 1).
        xi: the virtual step's size; DARTS sets it to the w learning rate (0.025 with its SGD; the
            quickstarts' Adam uses 3e-3). 0 gives the first-order gradient.

    Examples:
        >>> DartsSecondOrder(xi=0.003)
        DartsSecondOrder(temperature=1.0, xi=0.003)
    """

    def __init__(self, temperature: float = 1.0, xi: float = 3e-3):
        super().__init__(temperature)
        if not xi >= 0:
            raise ValueError(f"DartsSecondOrder: xi must be >= 0, got {xi}.")
        self.xi = float(xi)

    def hparams(self) -> dict[str, object]:
        return {"temperature": self.temperature, "xi": self.xi}

    def surrogate(self, logits: Mapping[str, Tensor], loss_fn: LossFn) -> EstimatorOutput:
        if not isinstance(loss_fn, UnrollableLoss):
            raise TypeError(
                "DartsSecondOrder differentiates through a w-step, so it needs SearchModule's step objective "
                f"(the batches and w: an UnrollableLoss), got {type(loss_fn).__name__}; use Softmax otherwise."
            )
        if any(v.dim() > 2 for v in logits.values()):
            raise ValueError("DartsSecondOrder takes shared architectures only (arch_samples='batch').")
        alpha, reported = self.relax(logits)
        point = {k: v.detach().requires_grad_(True) for k, v in alpha.items()}
        keys, weights = list(point), [w for w in loss_fn.weights if w.requires_grad]
        saved = [w.detach().clone() for w in weights]
        try:
            grad, value = self._gradient(loss_fn, point, keys, weights, saved)
        finally:
            _restore(weights, saved)
        # d loss / d phi = (d alpha / d phi)^T dL/d alpha; its value is L(w', alpha)
        loss = torch.stack([(alpha[k] * grad[k]).sum() for k in keys]).sum()
        return EstimatorOutput(loss=value + loss - loss.detach(), arch=reported, value=value)

    def _gradient(
        self, loss_fn: UnrollableLoss, point: Arch, keys: list[str], weights: list[Tensor], saved: list[Tensor]
    ) -> tuple[dict[str, Tensor], Tensor]:
        """(dL/dalpha through the virtual step, L(w', alpha)); leaves w changed (the caller restores ``saved``)."""
        train = loss_fn.variant("train")  # L_train, w held constant: its gradient in alpha only
        if self.xi:  # w' = w - xi grad_w L_train(w, alpha)
            fixed = {k: v.detach() for k, v in point.items()}
            _add(weights, torch.autograd.grad(loss_fn.variant("train", hold_weights=False)(fixed), weights,
                                              allow_unused=True), -self.xi)  # fmt: skip
        outer = loss_fn.variant(hold_weights=False)(point)  # L(w', alpha)
        grads = torch.autograd.grad(outer, [point[k] for k in keys] + weights, allow_unused=True)
        d_alpha = {k: torch.zeros_like(point[k]) if g is None else g for k, g in zip(keys, grads, strict=False)}
        d_w = grads[len(keys) :]
        norm = torch.sqrt(sum(((g.detach() ** 2).sum() for g in d_w if g is not None), torch.zeros(())))
        if self.xi and float(norm) > 0:  # the Hessian-vector product by central differences (Eq. 8)
            eps = 0.01 / float(norm)
            _restore(weights, saved)
            _add(weights, d_w, eps)  # w+
            plus = torch.autograd.grad(train(point), [point[k] for k in keys], allow_unused=True)
            _add(weights, d_w, -2 * eps)  # w-
            minus = torch.autograd.grad(train(point), [point[k] for k in keys], allow_unused=True)
            for k, gp, gm in zip(keys, plus, minus, strict=True):
                if gp is not None and gm is not None:
                    d_alpha[k] = d_alpha[k] - self.xi * (gp - gm) / (2 * eps)
        return d_alpha, outer.detach()


def _restore(params: Sequence[Tensor], saved: Sequence[Tensor]) -> None:
    """params = saved, in place."""
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)


def _add(params: Sequence[Tensor], grads: Sequence[Tensor | None], scale: float) -> None:
    """params += scale * grads, in place, skipping parameters without a gradient."""
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.add_(g, alpha=scale)
