"""The search-space protocol: what the search, the costs, the monitor and retraining rely on.

A space is one class (an ``nn.Module``) holding the weight-sharing supernet w and the architecture
logits phi (``self.arch``, an ``nn.ParameterDict`` of ``name -> [..., K]``: one independent
categorical per row). It declares:

* ``forward(x, arch)``: logits of the network that ``arch`` selects (one-hot rows: only the chosen
  operations run) or mixes (relaxed rows on the simplex), also with per-example rows [B, ...]
  (``distributions.examples_in``);
* ``arch_parameters()`` (phi), ``weight_parameters()`` (w), ``in_channels``, ``num_classes``;
* ``genotype(arch)`` (default: the most probable architecture) and ``arch_of(genotype)``, the one-hot
  architecture of a genotype, which raises ``ValueError`` naming what does not fit;
* ``derived_network(genotype)``: the stand-alone network of a genotype at the search's scale, what
  hardware costs are measured on and summaries report (its parameters are the network's own: a
  parameter count must not see the rest of the supernet);
* ``category_names(key)``: the names of a logits tensor's K columns, for plots.

Optional abilities are small interfaces a space inherits, not attributes probed at run time:
:class:`GroupedForward` (several evaluations in one pass, ``spaces/batch_groups.py``) and
:class:`ArchitecturePenalty` (a differentiable penalty on architectures, ``SearchModule(alpha_loss=...)``).
Drawing is an ability of the genotype (``spaces.genotype.Drawable``).

Examples:
    See ``examples/custom_space.py`` for a complete space in a user's own module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import ClassVar, Generic, TypeVar, cast

from torch import Tensor, nn

from unas_lightning.distributions import Arch, ArchDistribution, examples_in
from unas_lightning.spaces.genotype import Genotype

#: the genotype type of a space (``SearchSpace[DartsGenotype]``): what its ``genotype`` returns and ``arch_of`` takes
GenotypeT = TypeVar("GenotypeT", bound=Genotype)


class SearchSpace(nn.Module, ABC, Generic[GenotypeT]):
    """A weight-sharing supernet together with its architecture logits phi (see the module docstring).

    Subclasses call ``super().__init__(in_channels, num_classes)``, create ``self.arch`` and set the
    class attribute ``genotype_type`` to their :class:`~unas_lightning.spaces.genotype.Genotype` type;
    their ``arch_of`` and ``derived_network`` start with :meth:`check_genotype`. A subclass names that
    type for type checkers too, ``class MySpace(SearchSpace[MyGenotype])`` (optional).

    Args:
        in_channels: image channels the supernet reads.
        num_classes: classes of its classifier.
    """

    genotype_type: ClassVar[type[Genotype]]
    arch: nn.ParameterDict

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        for name, value in [("in_channels", in_channels), ("num_classes", num_classes)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive integer, got {value!r}.")
        self.in_channels, self.num_classes = in_channels, num_classes

    # -- what a space defines ------------------------------------------------------------------------
    @abstractmethod
    def forward(self, x: Tensor, arch: Mapping[str, Tensor]) -> Tensor:
        """Class logits of the network selected (one-hot rows) or mixed (relaxed rows) by ``arch``."""

    @abstractmethod
    def genotype(self, arch: Mapping[str, Tensor] | None = None) -> GenotypeT:
        """The genotype of a one-hot ``arch`` (default: the most probable architecture)."""

    @abstractmethod
    def arch_of(self, genotype: GenotypeT) -> Arch:
        """The one-hot architecture of ``genotype``; ``ValueError`` naming what does not fit this space."""

    @abstractmethod
    def derived_network(self, genotype: GenotypeT | None = None) -> nn.Module:
        """The stand-alone network of ``genotype`` (default: the most probable) at this space's scale."""

    def category_names(self, key: str) -> list[str]:
        """Names of the K categories of the logits ``key`` (for plots); indices unless overridden."""
        return [str(i) for i in range(self.arch[key].shape[-1])]

    # -- shared by every space -----------------------------------------------------------------------
    def arch_parameters(self) -> Iterator[nn.Parameter]:
        """phi: the logits of the architecture distribution."""
        return iter(self.arch.values())

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """w: the shared supernet weights (everything that is not phi)."""
        arch_ids = {id(p) for p in self.arch.values()}
        return (p for p in self.parameters() if id(p) not in arch_ids)

    def distribution(self) -> ArchDistribution:
        """p_phi(z) for the current logits."""
        return ArchDistribution(cast(Mapping[str, Tensor], self.arch))  # a ParameterDict: name -> Parameter

    def mode(self) -> Arch:
        """The most probable architecture (one-hot, detached)."""
        return self.distribution().mode()

    def check_genotype(self, genotype: Genotype) -> None:
        """``ValueError`` when ``genotype`` belongs to another space than this one's ``genotype_type``."""
        if not isinstance(genotype, self.genotype_type):
            raise ValueError(
                f"a {genotype.space_name!r}-space genotype does not fit a {type(self).__name__} "
                f"(it takes {self.genotype_type.space_name!r}-space genotypes)."
            )

    def examples_in(self, arch: Mapping[str, Tensor]) -> int | None:
        """B for per-example rows [B, ...], None for one shared architecture."""
        return examples_in(arch, cast(Mapping[str, Tensor], self.arch))

    def describe(self) -> str:
        """One line naming the space (written into checkpoints, quoted when one does not fit)."""
        shapes = {tuple(v.shape) for v in self.arch.values()}
        n_w = sum(p.numel() for p in self.weight_parameters())
        return (
            f"a {type(self).__name__} search ({len(self.arch)} categoricals of shapes "
            f"{sorted(shapes)}, {n_w:,} supernet weights)"
        )


class ArchitecturePenalty(ABC):
    """A space with a differentiable penalty on its architectures, added to the search objective with
    weight ``SearchModule(alpha_loss=...)`` (at one-hot and relaxed architectures alike)."""

    @abstractmethod
    def architecture_penalty(self, arch: Mapping[str, Tensor]) -> Tensor:
        """The penalty of ``arch``: a scalar, or [B] for per-example rows."""


class GroupedForward(ABC):  # noqa: B024 (an interface without methods: a declared ability)
    """A space whose forward inside ``batch_groups(g)`` computes exactly what g separate passes compute.

    Every batch norm of such a space keeps per-group statistics (``GroupedBatchNorm2d`` without running
    statistics), so the search objective concatenates several (architecture, batch) evaluations along
    the batch and runs them as one pass (``step_objective.StepObjective``).
    """
