"""DARTS second order: the finite-difference estimate against the exact gradient through the virtual step."""

from __future__ import annotations

import pytest
import torch

from unas_lightning.estimators import DartsSecondOrder, Softmax
from unas_lightning.estimators.darts_second_order import UnrollableLoss
from unas_lightning.search.step_objective import StepObjective
from unas_lightning.spaces import NB201Space


class SmoothLoss:
    """A smooth two-level problem: L_part(w, alpha) = sum(c_part * tanh(W @ alpha + b)) + 0.1 ||W||^2."""

    def __init__(self, objective: str = "val", hold: bool = True, weights=None, c=None):
        torch.manual_seed(0)
        self.weights = weights or [torch.randn(4, 30, dtype=torch.float64, requires_grad=True),
                                   torch.randn(4, dtype=torch.float64, requires_grad=True)]  # fmt: skip
        self.c = c or {"train": torch.randn(4, dtype=torch.float64), "val": torch.randn(4, dtype=torch.float64)}
        self.objective, self.hold = objective, hold

    def variant(self, objective=None, hold_weights=True):
        return SmoothLoss(objective or self.objective, hold_weights, self.weights, self.c)

    def value(self, weights, alpha):
        w, b = weights
        return (self.c[self.objective] * torch.tanh(w @ alpha["cell"].reshape(-1) + b)).sum() + 0.1 * (w**2).sum()

    def __call__(self, alpha):
        weights = [w.detach() for w in self.weights] if self.hold else self.weights
        return self.value(weights, alpha)


def _exact(loss: SmoothLoss, phi: torch.Tensor, xi: float) -> torch.Tensor:
    """d/dphi L_val(w - xi grad_w L_train(w, alpha), alpha), alpha = softmax(phi): double backward."""
    alpha = {"cell": torch.softmax(phi, -1)}
    train, val = loss.variant("train"), loss.variant("val")
    grads = torch.autograd.grad(train.value(loss.weights, alpha), loss.weights, create_graph=True)
    unrolled = [w - xi * g for w, g in zip(loss.weights, grads, strict=True)]
    return torch.autograd.grad(val.value(unrolled, alpha), phi)[0]


def test_second_order_matches_the_exact_gradient_through_the_virtual_step():
    """On a smooth problem the central difference of Eq. 8 (eps = 0.01 / ||grad||) agrees with double
    backprop to 1e-4 of its largest entry (float64; measured 5e-6); w is left exactly as it was; xi = 0 is
    first-order DARTS (``Softmax``)."""
    loss = SmoothLoss()
    assert isinstance(loss, UnrollableLoss)
    phi = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    before = [w.detach().clone() for w in loss.weights]
    xi = 0.3
    out = DartsSecondOrder(xi=xi).surrogate({"cell": phi}, loss)
    (got,) = torch.autograd.grad(out.loss, phi)
    want, first = _exact(loss, phi, xi), _exact(loss, phi, 0.0)
    assert (want - first).norm() > 0.1 * want.norm()  # the second-order term matters here
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()), rtol=0)  # measured: 5e-6
    assert all(torch.equal(a, b) for a, b in zip(before, loss.weights, strict=True))
    assert torch.isclose(out.value, loss.variant("val").value(
        [w - xi * g for w, g in zip(loss.weights, torch.autograd.grad(
            loss.variant("train").value(loss.weights, {"cell": torch.softmax(phi, -1)}), loss.weights), strict=True)],
        {"cell": torch.softmax(phi, -1)}))  # fmt: skip

    zero = DartsSecondOrder(xi=0.0).surrogate({"cell": phi}, loss)
    soft = Softmax().surrogate({"cell": phi}, loss)
    assert torch.allclose(torch.autograd.grad(zero.loss, phi)[0], torch.autograd.grad(soft.loss, phi)[0])


def test_second_order_runs_on_the_supernet_step_objective_and_restores_w():
    torch.manual_seed(0)
    space = NB201Space(in_channels=1, num_classes=3, channels=4, cells_per_stage=1)
    batch = {k: (torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))) for k in ("train", "val")}
    before = [p.detach().clone() for p in space.parameters()]
    phi = torch.zeros(6, 5, requires_grad=True)
    out = DartsSecondOrder(xi=0.01).surrogate({"cell": phi}, StepObjective(space, batch, "val", 0.5, examples=16))
    out.loss.backward()
    assert phi.grad is not None and bool(phi.grad.abs().sum() > 0) and out.arch["cell"].shape == (6, 5)
    assert all(torch.equal(a, b) for a, b in zip(before, space.parameters(), strict=True))
    assert all(p.grad is None for p in space.weight_parameters())  # the phi-step gives w no gradient


def test_second_order_refuses_a_loss_without_the_step_and_bad_settings():
    phi = torch.zeros(6, 5, requires_grad=True)
    with pytest.raises(TypeError, match="needs SearchModule's step objective"):
        DartsSecondOrder().surrogate({"cell": phi}, lambda arch: arch["cell"].sum())
    with pytest.raises(ValueError, match="xi must be >= 0"):
        DartsSecondOrder(xi=-1.0)
