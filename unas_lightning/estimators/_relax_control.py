"""Differentiable surrogates g(zeta) for RELAX (paper Eq. 5 and Sec. 5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from unas_lightning.distributions import examples_in


class LinearControl(nn.Module):
    """g(zeta) = sum_{k, rows, j} W_k[row, j] zeta_k[row, j] + b: one coefficient per choice (Sec. 5).

    For one-hot z this is the additive model "latency = sum of per-choice latencies" of FBNet,
    ProxylessNAS and the paper; RELAX evaluates it at relaxed rows. The weights take the shapes of
    the architecture on first use (or from ``shapes``), and are restored from checkpoints by shape.

    Args:
        shapes: optional mapping ``name -> shape`` of the architecture rows, to create W eagerly.

    Examples:
        >>> import torch
        >>> g = LinearControl({"op": (2, 3)})
        >>> g({"op": torch.ones(2, 3)}).shape
        torch.Size([])
        >>> g({"op": torch.ones(5, 2, 3)}).shape  # per-example architectures
        torch.Size([5])
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]] | None = None):
        super().__init__()
        self.weight = nn.ParameterDict()
        self.bias = nn.Parameter(torch.zeros(()))
        if shapes:
            self.materialize({k: torch.empty(tuple(v)) for k, v in shapes.items()})

    def materialize(self, like: Mapping[str, Tensor]) -> None:
        """Create zero coefficients for every key of ``like`` not seen yet."""
        for k, v in like.items():
            if k not in self.weight:
                self.weight[k] = nn.Parameter(torch.zeros(tuple(v.shape), device=self.bias.device))

    def forward(self, arch: Mapping[str, Tensor]) -> Tensor:
        """g(arch): a scalar, or [B] when the rows carry a leading per-example dimension B."""
        if len(self.weight) < len(arch):
            self.materialize(arch)
        n = examples_in(arch, cast(Mapping[str, Tensor], self.weight))  # a ParameterDict: name -> Parameter
        lead = () if n is None else (n,)
        return self.bias + cast(Tensor, sum((self.weight[k] * v).reshape(*lead, -1).sum(-1) for k, v in arch.items()))

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        wp = prefix + "weight."
        self.materialize({k[len(wp) :]: v for k, v in state_dict.items() if k.startswith(wp)})
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
