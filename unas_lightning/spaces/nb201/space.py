"""The NAS-Bench-201 search space: the benchmark's network with every edge of its cell searchable.

One categorical per edge over the 5 operations (logits ``"cell"`` of shape [6, 5], rows in the order of
``genotype.EDGES``, columns in the order of ``ops.NB201_OPS``); every cell of the network shares it, as
in the benchmark. The supernet follows the benchmark's network (stem, 3 stages of N cells, residual
reduction blocks, head); its batch norms use batch statistics only (affine-free inside the cells, the
usual weight-sharing practice), which also lets one pass evaluate several architectures
(``GroupedForward``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import cast

import torch
from torch import Tensor, nn

from unas_lightning.distributions import Arch
from unas_lightning.spaces.base import GroupedForward, SearchSpace
from unas_lightning.spaces.batch_groups import GroupedBatchNorm2d
from unas_lightning.spaces.nb201.genotype import EDGES, NODES, NB201Genotype
from unas_lightning.spaces.nb201.network import NB201Network
from unas_lightning.spaces.nb201.ops import NB201_OPS, NONE, ResidualReduction, make_op
from unas_lightning.spaces.plan import plan

KEY = "cell"


def _cell_norm(channels: int, affine: bool = False) -> nn.Module:
    return GroupedBatchNorm2d(channels, affine=affine, track_running_stats=False)


def _fixed_norm(channels: int) -> nn.Module:
    return GroupedBatchNorm2d(channels, affine=True, track_running_stats=False)


class SearchCell(nn.Module):
    """Every candidate operation on every edge; a forward computes the (op, coefficient) terms it is given."""

    def __init__(self, channels: int, affine: bool = False):
        super().__init__()
        norm = partial(_cell_norm, affine=affine)
        self.edges = nn.ModuleList(
            nn.ModuleDict({op: cast(nn.Module, make_op(op, channels, norm)) for op in NB201_OPS if op != NONE})
            for _ in EDGES
        )

    def forward(self, x: Tensor, terms: Sequence[Sequence[tuple[str, Tensor | None]]]) -> Tensor:
        nodes: list[Tensor | None] = [x, *([None] * (NODES - 1))]
        for (to, frm), candidates, edge_terms in zip(
            EDGES, cast("Sequence[nn.ModuleDict]", self.edges), terms, strict=True
        ):
            if nodes[frm] is None:
                continue
            for op, coef in edge_terms:
                if op == NONE:
                    continue  # the zero map adds nothing (its coefficient still scales nothing)
                y = candidates[op](nodes[frm])
                if coef is not None:
                    y = y * coef
                nodes[to] = y if nodes[to] is None else nodes[to] + y
        out = nodes[-1]
        return torch.zeros_like(x) if out is None else out


class NB201Space(SearchSpace[NB201Genotype], GroupedForward):
    """The NAS-Bench-201 supernet: 3 stages of ``cells_per_stage`` cells sharing one searchable cell.

    With one-hot rows only the chosen operation of each edge runs (and nothing for ``none``); relaxed
    rows mix the candidates. Per-example rows [B, 6, 5] are supported.

    Args:
        in_channels: image channels (3 for CIFAR, 1 for Fashion-MNIST).
        num_classes: classifier outputs.
        channels: C, the first stage's width (the benchmark: 16).
        cells_per_stage: N (the benchmark: 5).
        cell_affine: learn a scale and shift in the batch norms of the cells' operations (one per
            operation and edge; the derived networks always have them). Default: affine-free, the
            usual weight-sharing practice.

    Examples:
        >>> import torch
        >>> space = NB201Space(in_channels=1, num_classes=10, channels=8, cells_per_stage=1)
        >>> space.arch["cell"].shape
        torch.Size([6, 5])
        >>> space(torch.randn(2, 1, 28, 28), space.distribution().sample()).shape
        torch.Size([2, 10])
        >>> space.genotype().to_arch_str()  # uniform phi: the first operation of every edge
        '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|'
    """

    genotype_type = NB201Genotype

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: int = 16,
        cells_per_stage: int = 5,
        cell_affine: bool = False,
    ):
        super().__init__(in_channels, num_classes)
        for name, value in [("channels", channels), ("cells_per_stage", cells_per_stage)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NB201Space: {name} must be a positive integer, got {value!r}.")
        self.channels, self.cells_per_stage, self.cell_affine = channels, cells_per_stage, bool(cell_affine)
        self.arch = nn.ParameterDict({KEY: nn.Parameter(torch.zeros(len(EDGES), len(NB201_OPS)))})
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), _fixed_norm(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c, _fixed_norm))
                c *= 2
            layers += [SearchCell(c, self.cell_affine) for _ in range(cells_per_stage)]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(_fixed_norm(c), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c, num_classes)

    # -- forward -------------------------------------------------------------------------------------
    def plan(self, arch: Mapping[str, Tensor]) -> list[list[tuple[str, Tensor | None]]]:
        """Per edge, the (op, coefficient) pairs to compute (``spaces.plan``), shared by every cell."""
        rows = arch[KEY]
        mixtures = plan([rows[..., e, :] for e in range(len(EDGES))])
        return [[(NB201_OPS[j], c) for j, c in m.terms] for m in mixtures]

    def forward(self, x: Tensor, arch: Mapping[str, Tensor]) -> Tensor:
        """Logits of the network selected (one-hot rows) or mixed (relaxed rows) by ``arch``."""
        terms = self.plan(arch)
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, terms) if isinstance(layer, SearchCell) else layer(x)
        return self.classifier(self.head(x))

    # -- genotypes -----------------------------------------------------------------------------------
    def category_names(self, key: str) -> list[str]:
        """The 5 operations (the columns of every edge's row)."""
        return list(NB201_OPS)

    def genotype(self, arch: Mapping[str, Tensor] | None = None) -> NB201Genotype:
        """Genotype of ``arch`` (default: the most probable architecture)."""
        return NB201Genotype.from_rows((self.arch if arch is None else arch)[KEY])

    def arch_of(self, genotype: NB201Genotype) -> Arch:
        """One-hot architecture of a genotype."""
        self.check_genotype(genotype)
        index = torch.tensor([NB201_OPS.index(op) for op in genotype.ops])
        return {KEY: nn.functional.one_hot(index, len(NB201_OPS)).float().to(self.arch[KEY].device)}

    def derived_network(self, genotype: NB201Genotype | None = None) -> NB201Network:
        """The benchmark's network of ``genotype`` (default: the most probable) at this space's C and N."""
        genotype = genotype if genotype is not None else self.genotype()
        self.check_genotype(genotype)
        net = NB201Network(genotype, self.in_channels, self.num_classes, self.channels, self.cells_per_stage)
        return net.to(self.arch[KEY].device)
