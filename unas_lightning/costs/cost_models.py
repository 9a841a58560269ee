"""Non-additive cost models g(z): where per-operation costs do not add up (launch-bound GPUs, fused kernels).

The paper's model (Sec. 5) is additive, one coefficient per choice (``estimators.LinearControl``). It is
exact when every layer costs the same whatever its neighbours do; on a GPU a small layer's cost is often
hidden behind (or added to) the kernel launches of the next, and compiled backends fuse neighbouring
operations, so the cost of a choice depends on its context. Two models capture that:

* :class:`PairwiseControl`: the additive model plus one interaction matrix per pair of consecutive
  rows (row r and r + 1 of the same architecture key: consecutive layers of the ProxylessNAS chain,
  consecutive edges of a DARTS or NAS-Bench-201 cell):
  ``g(z) = b + sum_r w_r . z_r + sum_r z_r^T U_r z_{r+1}``. Linear in its parameters, so fitted by ridge
  regression like the additive one.
* :class:`MLPControl`: one hidden layer on the concatenated rows, fitted by gradient descent on the
  squared error (Adam, weight decay).

Both are differentiable in relaxed rows (RELAX evaluates g at zeta) and accept per-example rows (a
leading dimension B). ``costs.fit_cost_model`` fits them and picks the one with the lowest
cross-validated error; ``CostTerm(cost_model=...)`` uses the result as RELAX's control variate. A
better g lowers the estimator's variance; it never biases the search, which optimizes the measured cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor, nn

from unas_lightning.estimators import LinearControl


def rows_of(v: Tensor, lead: int) -> Tensor:
    """``v`` as [*lead, R, K]: every row of choices of one architecture key (K choices each)."""
    return v.reshape(*v.shape[:lead], -1, v.shape[-1])


class PairwiseControl(LinearControl):
    """g(z) = b + sum_r w_r . z_r + sum_r z_r^T U_r z_{r+1}: each choice's cost in the context of the next row.

    Rows are the architecture's rows per key in order (a key of shape [R, K] has R rows and R - 1
    consecutive pairs). Parameters take the architecture's shapes on first use (or from ``shapes``)
    and are restored from checkpoints by shape.

    Args:
        shapes: optional mapping ``name -> shape`` of the architecture rows, to create the parameters eagerly.

    Examples:
        >>> import torch
        >>> g = PairwiseControl({"ops": (3, 2)})
        >>> with torch.no_grad():
        ...     g.pair["ops"][0, 1, 1] = 5.0  # choice 1 in row 0 followed by choice 1 in row 1 costs 5 more
        >>> z = {"ops": torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])}
        >>> with torch.no_grad():
        ...     float(g(z)), float(g({"ops": torch.stack([z["ops"]] * 4)}).sum())
        (5.0, 20.0)
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]] | None = None):
        super().__init__()
        self.pair = nn.ParameterDict()
        if shapes:
            self.materialize({k: torch.empty(tuple(v)) for k, v in shapes.items()})

    def materialize(self, like: Mapping[str, Tensor]) -> None:
        """Create zero parameters (per-choice weights and pair matrices) for every key of ``like`` not seen yet."""
        for k, v in like.items():
            if k not in self.pair:
                rows, choices = max(v.numel() // v.shape[-1], 1), v.shape[-1]
                self.pair[k] = nn.Parameter(torch.zeros(max(rows - 1, 0), choices, choices, device=self.bias.device))
        super().materialize(like)

    def forward(self, arch: Mapping[str, Tensor]) -> Tensor:
        """g(arch): a scalar, or [B] when the rows carry a leading per-example dimension B."""
        out = super().forward(arch)  # the additive part (materializes new keys)
        lead = out.dim()
        for k, v in arch.items():
            z = rows_of(v, lead)
            out = out + torch.einsum("...ri,rij,...rj->...", z[..., :-1, :], self.pair[k], z[..., 1:, :])
        return out

    def features(self, arch: Mapping[str, Tensor]) -> Tensor:
        """The model's regressors for one architecture, in its parameter order (weights, then pairs)."""
        parts = []
        for k in self.weight:
            z = rows_of(arch[k].detach().double().cpu(), 0)
            parts.append(z.reshape(-1))
            parts.append(torch.einsum("ri,rj->rij", z[:-1], z[1:]).reshape(-1))
        return torch.cat(parts)

    def load_coefficients(self, coef: Tensor, bias: float) -> None:
        """Set the parameters from a flat coefficient vector in :meth:`features` order."""
        pos = 0
        with torch.no_grad():
            for k in self.weight:
                for p in (self.weight[k], self.pair[k]):
                    p.copy_(coef[pos : pos + p.numel()].reshape(p.shape).to(p))
                    pos += p.numel()
            self.bias.fill_(bias)


class MLPControl(nn.Module):
    """g(z) = mean + scale * (v . softplus(W x + c) + d), x the concatenated rows: a small non-additive regression.

    ``mean`` and ``scale`` (buffers) put the targets on unit scale for fitting. The layers take the
    architecture's size on first use (or from ``shapes``); materialize them before loading a checkpoint.

    Args:
        shapes: optional mapping ``name -> shape`` of the architecture rows.
        hidden: hidden units.

    Examples:
        >>> import torch
        >>> g = MLPControl({"ops": (3, 2)}, hidden=8)
        >>> g({"ops": torch.ones(3, 2)}).shape, g({"ops": torch.ones(5, 3, 2)}).shape
        (torch.Size([]), torch.Size([5]))
    """

    mean: Tensor
    scale: Tensor

    def __init__(self, shapes: Mapping[str, tuple[int, ...]] | None = None, hidden: int = 64):
        super().__init__()
        self.hidden = hidden
        self.keys: list[str] = []
        self.net: nn.Sequential | None = None
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        if shapes:
            self.materialize({k: torch.empty(tuple(v)) for k, v in shapes.items()})

    def materialize(self, like: Mapping[str, Tensor]) -> None:
        """Create the layers for the architecture ``like`` (once)."""
        if self.net is not None:
            return
        self.keys = list(like)
        size = sum(v.numel() for v in like.values())
        self.net = nn.Sequential(nn.Linear(size, self.hidden), nn.Softplus(), nn.Linear(self.hidden, 1))
        self.net.to(self.mean.device)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw the layers' initial weights from ``generator`` (the run's RNG stays put)."""
        assert self.net is not None
        with torch.no_grad():
            for layer in (cast(nn.Linear, self.net[0]), cast(nn.Linear, self.net[2])):
                bound = layer.in_features**-0.5
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
                layer.bias.zero_()

    def forward(self, arch: Mapping[str, Tensor]) -> Tensor:
        """g(arch): a scalar, or [B] when the rows carry a leading per-example dimension B."""
        if self.net is None:
            self.materialize(arch)
        assert self.net is not None
        size = sum(arch[k].numel() for k in self.keys)
        lead = (
            () if size == cast(nn.Linear, self.net[0]).in_features else arch[self.keys[0]].shape[:1]
        )  # per-example rows [B, ...]
        x = torch.cat([arch[k].reshape(*lead, -1) for k in self.keys], dim=-1).to(self.mean.dtype)
        return self.mean + self.scale * self.net(x).squeeze(-1)


class ChosenControl(nn.Module):
    """The cost model a fit chose, among the candidate ``kinds`` created up front (so checkpoints restore by shape).

    ``"auto"`` holds all three kinds and a buffer with the chosen one; a single kind holds just that model.

    Args:
        kind: ``"linear"``, ``"pairwise"``, ``"mlp"`` or ``"auto"``.

    Examples:
        >>> import torch
        >>> g = ChosenControl("auto")
        >>> g.materialize({"ops": torch.zeros(3, 2)})
        >>> g.adopt("pairwise", PairwiseControl({"ops": (3, 2)}))
        >>> g.kind, float(g({"ops": torch.ones(3, 2)}).detach())
        ('pairwise', 0.0)
    """

    chosen: Tensor

    def __init__(self, kind: str = "linear"):
        super().__init__()
        makers: dict[str, type[nn.Module]] = {"linear": LinearControl, "pairwise": PairwiseControl, "mlp": MLPControl}
        kinds = list(makers) if kind == "auto" else [kind]
        if any(k not in makers for k in kinds):
            raise ValueError(f"unknown cost model {kind!r}; choose one of {[*makers, 'auto']}.")
        self.kinds = kinds
        self.candidates = nn.ModuleDict({k: makers[k]() for k in kinds})
        self.register_buffer("chosen", torch.zeros((), dtype=torch.long))

    @property
    def kind(self) -> str:
        """The kind in use."""
        return self.kinds[int(self.chosen)]

    def materialize(self, like: Mapping[str, Tensor]) -> None:
        """Shape every candidate like the architecture ``like``."""
        for model in self.candidates.values():
            model.materialize(like)  # type: ignore[operator]  # every candidate has it

    def adopt(self, kind: str, fitted: nn.Module) -> None:
        """Use ``fitted`` (a model of ``kind``) from now on: its values are copied into the candidate."""
        if kind not in self.candidates:
            raise ValueError(f"this control holds {self.kinds}, not {kind!r}.")
        self.candidates[kind].load_state_dict(fitted.state_dict())
        self.chosen.fill_(self.kinds.index(kind))

    def forward(self, arch: Mapping[str, Tensor]) -> Tensor:
        return cast(Tensor, self.candidates[self.kind](arch))
