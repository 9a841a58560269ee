"""The latency term lambda_lat * L_lat(z) of the search objective (paper Sec. 3.2, "Latency loss")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from unas_lightning.distributions import Arch
from unas_lightning.estimators import Estimator, Relax
from unas_lightning.estimators.surrogates import LinearSurrogate

Form = Literal["linear", "hinge"]


class PenaltyOfSurrogate(nn.Module):
    """c(zeta) = penalty(g(zeta)): the latency surrogate g (ms) mapped through the term's penalty."""

    def __init__(self, term: LatencyTerm):
        super().__init__()
        self._term = [term]  # not a submodule: avoids a reference cycle in the module tree

    def forward(self, arch: Arch) -> Tensor:
        term = self._term[0]
        return term.penalty(term.latency_model(arch))


class LatencyTerm(nn.Module):
    """lambda_lat * L_lat(z) added to the phi-step, optimized with an unbiased black-box estimator.

    L_lat is the *measured* latency of the sampled architecture (set by ``LatencyCallback`` as
    ``measure``), turned into a penalty relative to a reference latency r (``target_ms``, or else the
    mean latency of the surrogate's training architectures):

    * ``form="linear"`` (the paper): L_lat = latency / r;
    * ``form="hinge"`` (the official code): L_lat = relu(latency / r - 1), i.e. only latency above the
      target is penalised.

    The estimator (default ``Relax(fit="none")``) gets the penalty of the fitted linear latency model
    g(z) = sum l_ij z_ij + b as its control variate: unbiased whatever g's error (Eq. 5). The latency
    term draws its own architecture sample, independent of the accuracy term's (the sum of two
    unbiased estimates is unbiased).

    Args:
        weight: lambda_lat (>= 0).
        target_ms: reference latency r in milliseconds (> 0); required for ``"hinge"``.
        form: ``"linear"`` or ``"hinge"``.
        warmup_epochs: ramp lambda_lat linearly from 0 over this many search epochs (0: no ramp).
        estimator: the black-box estimator (``needs_differentiable_loss`` must be False).
    """

    def __init__(
        self,
        weight: float = 0.1,
        target_ms: float | None = None,
        form: Form = "linear",
        warmup_epochs: int = 0,
        estimator: Estimator | None = None,
    ):
        super().__init__()
        if not weight >= 0:
            raise ValueError(f"latency weight (lambda_lat) must be >= 0, got {weight}.")
        if target_ms is not None and not target_ms > 0:
            raise ValueError(f"target_ms must be > 0 (milliseconds), got {target_ms}.")
        if form not in ("linear", "hinge"):
            raise ValueError(f"latency form must be 'linear' or 'hinge', got {form!r}.")
        if form == "hinge" and target_ms is None:
            raise ValueError("the hinge latency penalty needs target_ms.")
        if warmup_epochs < 0:
            raise ValueError(f"latency warmup_epochs must be >= 0, got {warmup_epochs}.")
        self.weight, self.target_ms, self.form, self.warmup_epochs = float(weight), target_ms, form, warmup_epochs
        self.latency_model = LinearSurrogate()
        self.estimator = estimator if estimator is not None else Relax(surrogate=PenaltyOfSurrogate(self), fit="none")
        if self.estimator.needs_differentiable_loss:
            raise ValueError(
                f"{type(self.estimator).__name__} differentiates the loss, but measured latency is a black box: "
                "use Relax, Reinforce or IndeCateR for the latency term."
            )
        self.register_buffer("reference_ms", torch.tensor(float(target_ms) if target_ms else 0.0))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.measure: Callable[[Arch], float] | None = None

    def prepare(self, logits) -> None:
        self.latency_model.materialize(logits)
        self.estimator.prepare(logits)
        if getattr(self.estimator, "fit", None) == "none":  # g is fitted by the callback, not by gradients
            self.latency_model.requires_grad_(False)

    def set_latency_model(self, model: LinearSurrogate, mean_latency_ms: float) -> None:
        """Install a fitted latency model (ms); the reference defaults to the sample mean latency."""
        with torch.no_grad():
            self.latency_model.materialize(dict(model.weight.items()))
            self.latency_model.requires_grad_(self.latency_model.bias.requires_grad)  # new weights follow
            for k, w in model.weight.items():
                self.latency_model.weight[k].copy_(w)
            self.latency_model.bias.copy_(model.bias)
            if self.target_ms is None:
                self.reference_ms.fill_(mean_latency_ms)
            self.ready.fill_(True)

    def penalty(self, latency_ms: Tensor) -> Tensor:
        ratio = latency_ms / self.reference_ms
        return ratio if self.form == "linear" else torch.relu(ratio - 1.0)

    def weight_at(self, search_epoch: int) -> float:
        """lambda_lat after ``search_epoch`` completed search epochs (linear ramp)."""
        if self.warmup_epochs == 0:
            return self.weight
        return self.weight * min(1.0, (search_epoch + 1) / self.warmup_epochs)

    def loss_fn(self, record: dict) -> Callable[[Arch], Tensor]:
        """The black-box L_lat(z) for the estimator; stores the measured latency in ``record``."""
        if self.measure is None:
            raise RuntimeError("the latency term has no measurement: add a LatencyCallback to the trainer callbacks.")

        def fn(arch: Arch) -> Tensor:
            ms = float(self.measure(arch))
            record["measured_ms"] = ms
            with torch.no_grad():
                record["predicted_ms"] = float(self.latency_model(arch))
            return self.penalty(torch.tensor(ms, device=self.reference_ms.device))

        return fn
