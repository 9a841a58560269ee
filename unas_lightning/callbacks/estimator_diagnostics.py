"""EstimatorDiagnostics: variance, signal-to-noise ratio and cosine of the phi-gradient estimates."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from torch import Tensor
from typing_extensions import override

from unas_lightning.distributions import expand_rows
from unas_lightning.estimators.base import Estimator

if TYPE_CHECKING:
    from unas_lightning.search.module import SearchModule


def gradient_statistics(samples: Tensor) -> dict[str, float]:
    """Moments of m gradient estimates ``samples`` [m, P] taken at the same phi.

    Returns:
        variance: mean over parameters of the per-parameter sample variance.
        log_variance: natural log of ``variance`` (the scale of the REBAR/RELAX papers' plots).
        snr: gradient signal-to-noise ratio ||mean|| / sqrt(sum of per-parameter variances).
        cosine: mean cosine between each estimate and the mean estimate.
    """
    if samples.dim() != 2 or samples.shape[0] < 2:
        raise ValueError(f"need [m >= 2, P] estimates, got shape {tuple(samples.shape)}.")
    samples = samples.double()
    mean = samples.mean(0)
    var = samples.var(0)
    total = var.sum().clamp_min(1e-300)
    cos = torch.nn.functional.cosine_similarity(samples, mean.expand_as(samples), dim=1, eps=1e-30)
    return {
        "variance": float(var.mean()),
        "log_variance": float(var.mean().clamp_min(1e-300).log()),
        "snr": float(mean.norm() / total.sqrt()),
        "cosine": float(cos.mean()),
    }


class EstimatorDiagnostics(L.Callback):
    """Measure the quality of the phi-gradient estimator during search, without stepping.

    Every ``every_n_steps`` search steps, on that step's batches and at the current phi and w, it
    draws ``num_estimates`` extra estimates of d/dphi E[L(z)] from a copy of the search's estimator
    (its learned state, e.g. baselines or temperatures, is used but not changed) and from each
    estimator in ``compare``, and logs per estimator (see :func:`gradient_statistics`)::

        diag/<name>/variance, diag/<name>/log_variance, diag/<name>/snr, diag/<name>/cosine,
        diag/<name>/seconds (wall time per estimate)

    ``<name>`` is ``search`` for the search's estimator and the class name (made unique with a
    suffix) for comparison estimators. Comparison estimators keep their own state between
    measurements (a REINFORCE baseline warms up on the diagnostic draws) and save it in checkpoints.
    The draws use a forked random-number generator, so the search itself follows exactly the same
    random stream with or without this callback.

    Args:
        every_n_steps: measure every n search steps (steps during the w-only warm-up do not count).
        num_estimates: m estimates per estimator and measurement (>= 2).
        compare: extra estimators to measure on the same batches, e.g. ``Reinforce`` beside ``Rebar``.

    Examples:
        In a config::

            trainer:
              callbacks:
                - class_path: unas_lightning.callbacks.EstimatorDiagnostics
                  init_args:
                    every_n_steps: 50
                    num_estimates: 16
                    compare:
                      - class_path: unas_lightning.estimators.Reinforce
    """

    def __init__(self, every_n_steps: int = 50, num_estimates: int = 16, compare: Sequence[Estimator] | None = None):
        super().__init__()
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be an integer >= 1, got {every_n_steps!r}.")
        if isinstance(num_estimates, bool) or not isinstance(num_estimates, int) or num_estimates < 2:
            raise ValueError(f"num_estimates must be an integer >= 2 (a variance needs two), got {num_estimates!r}.")
        self.every_n_steps = every_n_steps
        self.num_estimates = num_estimates
        self.compare = list(compare or [])
        for est in self.compare:
            if not isinstance(est, Estimator):
                raise TypeError(f"compare holds estimators, got {type(est).__name__}.")
        self.names = _unique_names(self.compare)
        self.search_steps = 0
        self.latest: dict[str, dict[str, float]] = {}

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for est in self.compare:
            est.prepare(dict(cast("SearchModule", pl_module).space.arch))

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for est in self.compare:
            est.to(pl_module.device)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        module = cast("SearchModule", pl_module)
        if not module.searching:
            return
        self.search_steps += 1
        if self.search_steps % self.every_n_steps:
            return
        estimators = {"search": copy.deepcopy(module.estimator), **dict(zip(self.names, self.compare, strict=True))}
        devices = [module.device] if module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for name, est in estimators.items():
                stats = self.measure(module, est, batch)
                self.latest[name] = stats
                for stat, value in stats.items():
                    module.log(f"diag/{name}/{stat}", value, batch_size=1)

    def measure(self, pl_module: SearchModule, estimator: Estimator, batch: Any) -> dict[str, float]:
        """``num_estimates`` estimates of ``estimator`` at the module's current phi, summarised."""
        phi = {k: v.detach().clone().requires_grad_(True) for k, v in pl_module.space.arch.items()}
        n = pl_module.examples_per_step(batch) if pl_module.arch_samples == "example" else None
        samples, start = [], time.perf_counter()
        for _ in range(self.num_estimates):
            logits = dict(phi) if n is None else expand_rows(phi, n)
            out = estimator.surrogate(logits, pl_module.step_loss(batch))
            grads = torch.autograd.grad(out.loss, list(phi.values()), allow_unused=True)
            samples.append(
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(grads, phi.values(), strict=True)
                    ]
                )
            )
        seconds = (time.perf_counter() - start) / self.num_estimates
        return {**gradient_statistics(torch.stack(samples)), "seconds": seconds}

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"search_steps": self.search_steps, "compare": [est.state_dict() for est in self.compare]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.search_steps = int(state_dict.get("search_steps", 0))
        for est, sd in zip(self.compare, state_dict.get("compare", []), strict=False):
            est.load_state_dict(sd)


def _unique_names(estimators: Sequence[Estimator]) -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for est in estimators:
        base = type(est).__name__
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names
