"""ControlVariateEstimator: the base of REBAR and RELAX, with k samples and optional self-tuning.

The estimate itself lives in ``cv_estimate.py``; this class owns the state around it: the temperature
tau, the scale eta and the baseline beta (fixed, or learned online by the variance objective of the
REBAR/RELAX papers), the optimizer that learns them, and their agreement across DDP ranks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from unas_lightning.arch_loss import ArchLoss, as_arch_loss
from unas_lightning.distributions import check_temperature
from unas_lightning.estimators._cv_estimate import (
    CVSamples,
    draw,
    linear_parts,
    linear_surrogate,
    summed_over_examples,
    surrogate_loss,
    variance_objective,
)
from unas_lightning.estimators.base import Estimator, EstimatorOutput, LossFn, strip_batch


class ControlVariateEstimator(Estimator):
    """Base of ``Rebar`` and ``Relax``: the estimate of ``cv_estimate``, optional self-tuning, k samples.

    Subclasses say what the control variate c is (``control_variate``) and may fit extra state
    (``extra_objective``, e.g. RELAX's regression of g on observed losses).

    Args:
        temperature: initial tau of the relaxations (> 0).
        eta: initial scale of the control variate.
        num_samples: k samples per estimate; k > 1 uses leave-one-out baselines.
        self_tuning: learn eta, log tau and (k = 1) a baseline beta online by gradient descent on the
            estimator's own second moment sum(g_hat^2) (REBAR/RELAX papers).
        tune_lr: Adam learning rate of the tuned quantities.
        tune_temperature: with ``self_tuning``, also learn tau. Its gradient needs a double backward
            through the control variate (several times the cost of an estimate when c is the
            supernet); without it eta and beta are tuned from first-order gradients in closed form
            (g_hat is linear in them), at the cost of the fixed-setting estimator.
        conditional: how zeta~ ~ r(zeta | z) is drawn: ``"independent"`` with fresh noise (two evaluations
            of c per sample; the default), or ``"coupled"`` from the sample's own race, so that zeta~ = zeta
            in value and c is evaluated once (the official UNAS code). Both are exact draws and unbiased;
            on the DARTS supernet the coupled estimate has 3-5x the variance of the independent one (README,
            estimator benchmark (b)), more than its saved evaluation buys.
    """

    log_temperature: Tensor  # buffers, or parameters when tuned (``self_tuning``)
    eta: Tensor
    beta: Tensor

    def __init__(
        self,
        temperature: float = 0.4,
        eta: float = 1.0,
        num_samples: int = 1,
        self_tuning: bool = False,
        tune_lr: float = 0.01,
        tune_temperature: bool = True,
        conditional: Literal["coupled", "independent"] = "independent",
    ):
        super().__init__()
        tau = check_temperature(temperature)
        if conditional not in ("coupled", "independent"):
            raise ValueError(f"conditional must be 'coupled' or 'independent', got {conditional!r}.")
        self.conditional = conditional
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
        if not tune_lr > 0:
            raise ValueError(f"tune_lr must be > 0, got {tune_lr}.")
        self.num_samples = num_samples
        self.self_tuning = bool(self_tuning)
        self.tune_temperature = bool(tune_temperature)
        self.tune_lr = float(tune_lr)
        init = {"log_temperature": math.log(tau), "eta": float(eta), "beta": 0.0}
        for name, value in init.items():
            t = torch.tensor(value)
            if self.self_tuning and (name != "log_temperature" or self.tune_temperature):
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        self._optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict[str, Any] | None = None

    # -- what subclasses define ------------------------------------------------------------------
    def control_variate(self, loss: ArchLoss) -> ArchLoss:
        """c, evaluated at zeta and zeta~ (differentiable in relaxed rows)."""
        raise NotImplementedError

    def extra_objective(self, s: CVSamples) -> Tensor | None:
        """An additional objective for the trainable state (minimized with the variance one)."""
        return None

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """What the estimator's own optimizer updates, by name."""
        return {n: p for n, p in self.named_parameters() if n in ("log_temperature", "eta", "beta")}

    def uses_variance_objective(self) -> bool:
        """True when tuning needs the estimate as a graph (double backward); else eta, beta are closed-form."""
        return self.self_tuning and self.tune_temperature

    # -- state -----------------------------------------------------------------------------------
    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def hparams(self) -> dict[str, object]:
        return {
            "temperature": round(float(self.temperature.detach()), 4),
            "eta": round(float(self.eta.detach()), 4),
            "num_samples": self.num_samples,
            "conditional": self.conditional,
            "self_tuning": self.self_tuning,
            **({"tune_temperature": self.tune_temperature} if self.self_tuning else {}),
        }

    def _get_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
        if not params:
            return None
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(params, lr=self.tune_lr)
            if self._pending_optimizer_state is not None:
                self._optimizer.load_state_dict(self._pending_optimizer_state)
                self._pending_optimizer_state = None
        return self._optimizer

    def get_extra_state(self) -> dict[str, Any]:
        """The estimator's optimizer state travels in checkpoints with the module."""
        opt = self._optimizer
        return {"optimizer": opt.state_dict() if opt is not None else self._pending_optimizer_state}

    def set_extra_state(self, state: dict[str, Any] | None) -> None:
        saved = (state or {}).get("optimizer")
        self._optimizer = None
        self._pending_optimizer_state = saved

    # -- the estimate ----------------------------------------------------------------------------
    def surrogate(self, logits: Mapping[str, Tensor], loss_fn: LossFn) -> EstimatorOutput:
        """The estimate of ``cv_estimate`` as a surrogate loss; tunes the estimator's state when it learns."""
        loss = as_arch_loss(loss_fn)
        phi = list(logits.values())
        graph = self.uses_variance_objective()
        learned_tau = isinstance(self.log_temperature, nn.Parameter)
        tau = self.temperature if learned_tau else float(self.temperature.detach())
        s = draw(
            logits,
            loss,
            self.control_variate(loss),
            self.num_samples,
            tau,
            on_first_value=lambda n: self.prepare(strip_batch(logits, n)),
            coupled=self.conditional == "coupled",
        )
        if not self.self_tuning and not self.trainable_parameters():  # nothing to tune: one backward
            fixed = surrogate_loss(s, float(self.eta.detach()), float(self.beta.detach()))
            return EstimatorOutput(loss=fixed, arch=s.z[0], value=s.f[0].mean())
        u, v, w = linear_parts(s, phi, create_graph=graph)
        eta: Tensor | float = self.eta if graph else float(self.eta.detach())
        beta: Tensor | float = self.beta if graph else float(self.beta.detach())
        scale = 1.0 / s.f.numel()
        g_hat = [(a + eta * b + beta * c) * scale for a, b, c in zip(u, v, w, strict=True)]
        self._tune(s, g_hat, v, w, scale, graph)
        return EstimatorOutput(loss=linear_surrogate(phi, g_hat), arch=s.z[0], value=s.f[0].mean())

    def _tune(
        self, s: CVSamples, g_hat: list[Tensor], v: list[Tensor], w: list[Tensor], scale: float, graph: bool
    ) -> None:
        """One step of the estimator's own optimizer on sum(g_hat^2) (+ ``extra_objective``)."""
        named = self.trainable_parameters()
        opt = self._get_optimizer(list(named.values()))
        if opt is None:
            return
        objective = variance_objective(g_hat, s.n) if graph else None
        extra = self.extra_objective(s)
        if extra is not None:
            objective = extra if objective is None else objective + extra
        grads: dict[str, Tensor | None] = dict.fromkeys(named)
        if objective is not None:
            found = torch.autograd.grad(objective, list(named.values()), allow_unused=True)
            grads.update(zip(named, found, strict=True))
        if self.self_tuning and not graph:  # d/d(eta, beta) sum(g_hat^2) = 2 <g_hat, (v, w)> scale, in closed form
            for name, part in (("eta", v), ("beta", w)):
                d = cast(
                    Tensor,
                    sum(
                        (2 * summed_over_examples(g, s.n) * summed_over_examples(b, s.n) * scale).sum()
                        for g, b in zip(g_hat, part, strict=True)
                    ),
                )
                prev = grads[name]
                grads[name] = d.reshape(()) if prev is None else prev + d.reshape(())
        present = _average_over_ranks([g for g in grads.values() if g is not None])  # None: same on every rank
        grads = {n: None if g is None else present.pop(0) for n, g in grads.items()}
        # a NaN/inf loss (skipped by the search) must not corrupt the tuned state for good: skip its step
        if not all(bool(torch.isfinite(g).all()) for g in grads.values() if g is not None):
            return
        opt.zero_grad(set_to_none=True)
        for name, p in named.items():
            g = grads[name]
            p.grad = None if g is None else g.detach().to(p.dtype)  # e.g. float64 logits
        opt.step()
        opt.zero_grad(set_to_none=True)


def _average_over_ranks(grads: list[Tensor]) -> list[Tensor]:
    """The mean of ``grads`` over the processes of a ``torch.distributed`` job (DDP), else ``grads``.

    Under DDP every rank estimates from its own samples, and phi's gradient is averaged by DDP; the
    estimator's own tuned state (eta, log tau, beta, RELAX's g) is averaged here the same way, so it
    stays identical on every rank (and a checkpoint written by rank 0 holds everybody's state).
    Every rank calls ``surrogate`` once per training step, so the collective is matched.
    """
    if not grads or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return grads
    world = torch.distributed.get_world_size()
    if world == 1:
        return grads
    flat = torch.cat([g.detach().reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    return [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]
