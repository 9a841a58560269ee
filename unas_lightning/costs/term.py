"""CostTerm: lambda * penalty(m(z)), a hardware cost in the phi-step (paper Sec. 3.2, "Latency loss").

m is a :class:`~unas_lightning.costs.base.Meter`: measured latency, parameters, multiply-adds, or one
of the user's own. The term optimizes the *measured* value through an unbiased black-box estimator
(RELAX by default, with a cost model fitted to measured values, Sec. 5, as its control variate: a poor fit costs
variance, never bias). ``SearchModule(costs=[...])`` sums any number of terms; each draws its own
architecture sample, independent of the accuracy term's (a sum of unbiased estimates is unbiased).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from unas_lightning.costs.base import Candidate, Meter
from unas_lightning.costs.cost_models import ChosenControl
from unas_lightning.costs.fitting import CostModelKind, fit_cost_model
from unas_lightning.distributions import Arch, ArchDistribution
from unas_lightning.estimators import BlackBox, Estimator, Relax
from unas_lightning.spaces.base import SearchSpace

Form = Literal["linear", "hinge"]


class Penalty(nn.Module):
    """penalty(m) relative to a reference r: ``"linear"`` m / r (the paper), ``"hinge"`` relu(m / r - 1)
    (the official code: only a cost above the target counts). r is the target, else the mean cost of
    the surrogate's calibration architectures."""

    reference: Tensor  # buffer

    def __init__(self, form: Form = "linear", target: float | None = None):
        super().__init__()
        self.form = form
        self.register_buffer("reference", torch.tensor(float(target) if target else 0.0))

    def forward(self, value: Tensor) -> Tensor:
        ratio = value / self.reference
        return ratio if self.form == "linear" else torch.relu(ratio - 1.0)


class PenalizedControl(nn.Module):
    """c(zeta) = penalty(g(zeta)): the fitted cost model g mapped through the term's penalty (RELAX's c)."""

    def __init__(self, model: nn.Module, penalty: Penalty):
        super().__init__()
        self.model, self.penalty = model, penalty

    def forward(self, arch: Mapping[str, Tensor]) -> Tensor:
        return self.penalty(self.model(arch))


@dataclass(frozen=True)
class Binding:
    """What a cost term is set up against (not owned by it, so not part of its state): the search space it
    measures, the data's example shape, and the run's processes (a Lightning strategy, or None)."""

    space: SearchSpace
    example_shape: tuple[int, ...]
    ranks: Any = None


class CostTerm(nn.Module):
    """lambda * penalty(m(z)) added to the phi-step, m measured by ``meter`` (see the module docstring).

    Before the first phi-step it measures ``calibration_archs`` uniformly sampled architectures, fits the
    surrogate g (the paper's additive model by default, see ``cost_model``) and reports its held-out
    error; at every phi-step it measures the architecture its estimator samples (each distinct
    architecture once: a cache, saved in checkpoints). Under DDP this is a collective: rank 0 measures
    every rank's sample and broadcasts, so all ranks hold the same values (``CostMonitor`` drives
    calibration, refits and reports).

    Logs per phi-step: ``cost/<name>/measured``, ``predicted`` (by g), ``abs_error``, ``penalty``, ``lambda``.

    Args:
        meter: what is measured (``MeasuredLatency``, ``ParameterCount``, ``MultiplyAdds``, your own).
        weight: lambda (>= 0).
        form: ``"linear"`` or ``"hinge"`` (see :class:`Penalty`).
        target: the reference r in the meter's unit (> 0); required for ``"hinge"``.
        warmup_epochs: ramp lambda linearly from 0 over this many search epochs (0: no ramp).
        estimator: a black-box estimator (``estimators.BlackBox``); default ``Relax`` with g as c.
        name: the term's name in logs and reports (default: the meter's ``name``).
        calibration_archs: architectures measured before search to fit g (paper: 10,000).
        holdout: fraction of them kept out of the fit to report its error.
        alpha: ridge penalty of the fit (weight decay for ``"mlp"``).
        cost_model: g's kind (``costs.fit_cost_model``): ``"linear"`` (the paper's per-choice costs),
            ``"pairwise"`` (each choice in the context of the next row), ``"mlp"``, or ``"auto"`` (the one
            with the lowest cross-validated error). A closer g lowers RELAX's variance; no kind biases it.
        refit_every_n_steps: refit g on everything measured so far every n phi-steps (0: never).
        seed: seed of the calibration architectures (independent of the run seed).
    """

    ready: Tensor  # buffer: calibrated

    def __init__(
        self,
        meter: Meter,
        weight: float = 0.1,
        form: Form = "linear",
        target: float | None = None,
        warmup_epochs: int = 0,
        estimator: Estimator | None = None,
        name: str | None = None,
        calibration_archs: int = 200,
        holdout: float = 0.2,
        alpha: float = 1e-3,
        refit_every_n_steps: int = 0,
        seed: int = 0,
        cost_model: CostModelKind = "linear",
    ):
        super().__init__()
        if not isinstance(meter, Meter):
            raise TypeError(f"meter must be an unas_lightning.costs.Meter, got {type(meter).__name__}.")
        self.meter = meter
        self.name = name or meter.name
        if not weight >= 0:
            raise ValueError(f"cost {self.name!r}: weight (lambda) must be >= 0, got {weight}.")
        if target is not None and not target > 0:
            raise ValueError(
                f"cost {self.name!r}: target must be > 0 ({meter.unit or 'the meter unit'}), got {target}."
            )
        if form not in ("linear", "hinge"):
            raise ValueError(f"cost {self.name!r}: form must be 'linear' or 'hinge', got {form!r}.")
        if form == "hinge" and target is None:
            raise ValueError(f"cost {self.name!r}: the hinge penalty needs a target.")
        if warmup_epochs < 0:
            raise ValueError(f"cost {self.name!r}: warmup_epochs must be >= 0, got {warmup_epochs}.")
        if calibration_archs < 5:
            raise ValueError(f"cost {self.name!r}: calibration_archs must be >= 5 to fit and check g.")
        if not 0 < holdout < 1:
            raise ValueError(f"cost {self.name!r}: holdout must lie in (0, 1), got {holdout}.")
        self.weight, self.target, self.warmup_epochs = float(weight), target, warmup_epochs
        self.calibration_archs, self.holdout, self.alpha = calibration_archs, holdout, alpha
        self.refit_every_n_steps, self.seed = refit_every_n_steps, seed
        self.penalty = Penalty(form, target)
        if cost_model not in ("linear", "pairwise", "mlp", "auto"):
            raise ValueError(
                f"cost {self.name!r}: cost_model must be 'linear', 'pairwise', 'mlp' or 'auto', got {cost_model!r}."
            )
        self.cost_model = cost_model
        self.model = ChosenControl(cost_model)  # g, fitted to measured values, never by the phi-step
        if estimator is None:
            estimator = Relax(control=PenalizedControl(self.model, self.penalty), fit="none")
        if not isinstance(estimator, Estimator):
            raise TypeError(f"cost {self.name!r}: estimator must be an Estimator, got {type(estimator).__name__}.")
        self.estimator = estimator
        if not isinstance(self.estimator, BlackBox):
            raise ValueError(
                f"{type(self.estimator).__name__} differentiates the loss, but a measured cost is a black box: "
                f"use Relax, Reinforce or IndeCateR for the cost {self.name!r}."
            )
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.cache: dict[str, float] = {}  # architecture (its chosen indices as JSON) -> measured value
        self._aside: dict[str, float] = {}  # measured by ``measured_here``, not yet in every rank's cache
        self.fit_metrics: dict[str, float | str] = {}
        self.phi_steps = 0
        self.binding: Binding | None = None  # set by ``setup``

    # -- set-up --------------------------------------------------------------------------------------
    def prepare(self, logits: Mapping[str, Tensor]) -> None:
        """Shape g and the estimator's state like the architecture (before optimizers and checkpoints)."""
        self.model.materialize(logits)
        self.model.requires_grad_(False)
        self.estimator.prepare(logits)

    def setup(self, space: SearchSpace, example_shape: tuple[int, ...], ranks: Any = None) -> None:
        """Bind the term to the space it measures, the data's example shape and the processes of the run.

        ``ranks`` is the run's Lightning strategy (``world_size``, ``global_rank``, ``is_global_zero``,
        ``all_gather``, ``broadcast``); None for a single process.
        """
        self.binding = Binding(space, tuple(example_shape), ranks)

    @property
    def example_shape(self) -> tuple[int, ...] | None:
        """The data's example shape once ``setup`` ran, else None."""
        return self.binding.example_shape if self.binding is not None else None

    @property
    def device(self) -> torch.device:
        """Where the term's state lives (the search's device)."""
        return self.penalty.reference.device

    def weight_at(self, search_epoch: int) -> float:
        """lambda after ``search_epoch`` completed search epochs (linear ramp)."""
        if self.warmup_epochs == 0:
            return self.weight
        return self.weight * min(1.0, (search_epoch + 1) / self.warmup_epochs)

    # -- measured values -----------------------------------------------------------------------------
    @staticmethod
    def key(arch: Mapping[str, Tensor]) -> str:
        """The cache key of a one-hot architecture: its chosen indices as JSON."""
        return json.dumps({k: v.detach().argmax(-1).tolist() for k, v in arch.items()}, sort_keys=True)

    def _measure(self, arch: Arch) -> float:
        """The meter's value of one architecture on this process (no cache, no collectives)."""
        if self.binding is None:
            raise RuntimeError(f"cost {self.name!r} is not set up: SearchModule.setup binds it to the space.")
        space, shape = self.binding.space, self.binding.example_shape
        return float(self.meter.measure(Candidate(space.genotype(arch), space, shape, self.device)))

    @property
    def _ranks(self) -> Any:
        return self.binding.ranks if self.binding is not None else None

    def _many_ranks(self) -> bool:
        return self._ranks is not None and self._ranks.world_size > 1

    def value(self, arch: Arch) -> float:
        """The measured cost of the one-hot ``arch``; cached per architecture.

        Under DDP a collective: every rank calls it as often as the others (each with its own sample),
        rank 0 measures the architectures not cached yet and broadcasts the values, so ``cache`` (what g is
        fitted on and checkpoints hold) is the same on every rank. Call it from the training step only
        (every rank reaches it in the same order); hooks use :meth:`measured_here`.
        """
        if not self._many_ranks():
            self._measure_missing([arch])
            return self.cache[self.key(arch)]
        ranks = self._ranks
        flat = torch.cat([arch[k].detach().argmax(-1).flatten() for k in sorted(arch)])
        rows = ranks.all_gather(flat).reshape(ranks.world_size, -1).cpu()
        archs = [_unflatten(row, arch) for row in rows]
        self._measure_missing(archs)
        return self.cache[self.key(archs[ranks.global_rank])]

    def measured_here(self, arch: Arch) -> float:
        """The measured cost of ``arch`` on this process alone: no collective, so any hook may call it.

        A value not in ``cache`` is kept aside (``_aside``), not in ``cache``, so the ranks' caches stay
        equal; when the step later needs the same architecture, rank 0 moves its value into ``cache`` and
        broadcasts it instead of measuring again. Under DDP call it on rank 0 (the rank that reports).
        """
        key = self.key(arch)
        if key in self.cache:
            return self.cache[key]
        if key not in self._aside:
            self._aside[key] = self._measure(arch)
        return self._aside[key]

    def _measure_missing(self, archs: list[Arch]) -> None:
        """Rank 0 measures the architectures not cached yet (or takes the value it measured aside) and every
        rank stores rank 0's values."""
        by_key = {self.key(a): a for a in archs}
        new = [k for k in by_key if k not in self.cache]
        main = self._ranks is None or self._ranks.is_global_zero
        values = [self._aside.pop(k) if k in self._aside else self._measure(by_key[k]) for k in new] if main else None
        if self._many_ranks():
            new, values = self._ranks.broadcast((new, values) if main else None, src=0)
        assert values is not None  # measured here (rank 0), or broadcast by rank 0
        self.cache.update(zip(new, values, strict=True))

    def predicted(self, arch: Arch) -> float:
        """g(arch), the fitted cost model's value."""
        with torch.no_grad():
            return float(self.model(arch))

    # -- the surrogate g -----------------------------------------------------------------------------
    def calibrate(self, logits: Mapping[str, Tensor]) -> str:
        """Measure ``calibration_archs`` uniform samples of the space (``logits``' shapes) and fit g.

        A collective under DDP (rank 0 measures). Returns a line to print.
        """
        uniform = {k: torch.zeros_like(v) for k, v in logits.items()}
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        archs = [ArchDistribution(uniform).sample(generator=gen) for _ in range(self.calibration_archs)]
        self._measure_missing(archs)
        values = [self.cache[self.key(a)] for a in archs]
        self.fit(archs, values)
        if self.target is None:
            self.penalty.reference.fill_(statistics.fmean(values))
        self.ready.fill_(True)
        m = self.fit_metrics
        unit = self.meter.unit
        return (
            f"cost {self.name!r}: {len(archs)} architectures measured; surrogate ({m['kind']}) held-out MAE "
            f"{m['test_mae']:.4g} {unit}, MAPE {m['test_mape']:.2f}%, {m['test_within10']:.0f}% within +-10%"
        )

    def fit(self, archs: list[Arch], values: list[float]) -> None:
        """Fit g to measured values (the penalty's reference stays what calibration set)."""
        result = fit_cost_model(
            archs, values, kind=self.cost_model, holdout=self.holdout, alpha=self.alpha, seed=self.seed
        )
        self.model.adopt(result.kind, result.model.to(self.device))
        self.model.requires_grad_(False)
        self.fit_metrics = result.as_dict()

    def refit_if_due(self, template: Mapping[str, Tensor]) -> bool:
        """Refit g on every value measured so far when ``refit_every_n_steps`` phi-steps have passed."""
        n = self.refit_every_n_steps
        if not n or self.phi_steps % n or len(self.cache) < 5:
            return False
        self.fit([_one_hot(json.loads(key), template) for key in self.cache], list(self.cache.values()))
        return True

    # -- the phi-step --------------------------------------------------------------------------------
    def phi_loss(self, logits: Mapping[str, Tensor], search_epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """lambda * the estimator's surrogate of E[penalty(m(z))], and what to log (means over its samples)."""
        observed: list[tuple[float, float]] = []

        def loss_fn(arch: Arch) -> Tensor:
            value = self.value(arch)
            observed.append((value, self.predicted(arch)))
            return self.penalty(torch.tensor(value, device=self.device))

        out = self.estimator.surrogate(logits, loss_fn)
        self.phi_steps += 1
        lam = self.weight_at(search_epoch)
        measured = statistics.fmean(v for v, _ in observed)
        predicted = statistics.fmean(p for _, p in observed)
        prefix = f"cost/{self.name}"
        logs = {
            f"{prefix}/measured": torch.tensor(measured),
            f"{prefix}/predicted": torch.tensor(predicted),
            f"{prefix}/abs_error": torch.tensor(statistics.fmean(abs(v - p) for v, p in observed)),
            f"{prefix}/penalty": out.value.detach(),
            f"{prefix}/lambda": torch.tensor(lam),
        }
        return lam * out.loss, logs

    # -- reports and checkpoints -----------------------------------------------------------------------
    def report(self, arch: Arch) -> dict[str, Any]:
        """The measured and predicted cost of ``arch`` with the term's settings (this process; no collective)."""
        return {
            "measured": self.measured_here(arch),
            "predicted": self.predicted(arch),
            "unit": self.meter.unit,
            "meter": {"class": type(self.meter).__name__, **self.meter.settings()},
            "weight": self.weight,
            "form": self.penalty.form,
            "target": self.target,
            "reference": float(self.penalty.reference),
            "surrogate": self.fit_metrics,
            "architectures_measured": len(self.cache),
        }

    def get_extra_state(self) -> dict[str, Any]:
        return {"cache": dict(self.cache), "fit_metrics": dict(self.fit_metrics), "phi_steps": self.phi_steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.cache = dict(state.get("cache", {}))
        self.fit_metrics = dict(state.get("fit_metrics", {}))
        self.phi_steps = int(state.get("phi_steps", 0))

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, weight={self.weight}, form={self.penalty.form!r}, target={self.target}, "
            f"cost_model={self.cost_model!r}"
        )


def _one_hot(indices: Mapping[str, Any], template: Mapping[str, Tensor]) -> Arch:
    """One-hot rows (dtype and device of ``template``) with the chosen ``indices`` per key."""
    return {k: nn.functional.one_hot(torch.as_tensor(indices[k]), v.shape[-1]).to(v) for k, v in template.items()}


def _unflatten(indices: Tensor, template: Mapping[str, Tensor]) -> Arch:
    """The one-hot architecture of flat per-row ``indices`` (sorted keys), shaped like ``template``."""
    by_key, start = {}, 0
    for k in sorted(template):
        shape = template[k].shape[:-1]
        by_key[k] = indices[start : start + shape.numel()].reshape(shape)
        start += shape.numel()
    return _one_hot(by_key, template)
