"""The small supernet protocol every search space follows (arch logits, forward, export)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor, nn

from unas_lightning.distributions import Arch, ArchDistribution


class SearchSpace(nn.Module):
    """A weight-sharing supernet together with its architecture logits phi.

    Subclasses create ``self.arch``, an ``nn.ParameterDict`` of logits ``name -> [..., K]`` (DESIGN
    Contract 1), and implement ``forward(x, arch)``, ``genotype(arch)`` and ``arch_of(genotype)``.

    ``forward(x, arch)`` accepts one-hot rows (then only the chosen operations run) or relaxed rows
    (then the candidates are mixed with the row weights).
    """

    arch: nn.ParameterDict
    #: True when every batch norm keeps per-group statistics inside ``batch_groups`` (see
    #: ``spaces/batch_groups.py``), so several evaluations can share one forward pass.
    supports_batch_groups: bool = False

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        """phi: the logits of the architecture distribution."""
        return iter(self.arch.values())

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """w: the shared supernet weights (everything that is not phi)."""
        arch_ids = {id(p) for p in self.arch.values()}
        return (p for p in self.parameters() if id(p) not in arch_ids)

    def distribution(self) -> ArchDistribution:
        """p_phi(z) for the current logits."""
        return ArchDistribution(self.arch)

    def forward(self, x: Tensor, arch: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def genotype(self, arch: Mapping[str, Tensor] | None = None) -> Any:
        """The discrete architecture of a one-hot ``arch`` (default: the most probable one)."""
        raise NotImplementedError

    def category_names(self, key: str) -> list[str]:
        """Names of the K categories of the logits ``key`` (for plots); indices unless overridden."""
        return [str(i) for i in range(self.arch[key].shape[-1])]

    def arch_of(self, genotype: Any) -> Arch:
        """The one-hot architecture mapping that encodes ``genotype`` in this space."""
        raise NotImplementedError
