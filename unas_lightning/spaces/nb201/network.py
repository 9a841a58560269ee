"""The NAS-Bench-201 network of a cell: what the benchmark trained for every one of its 15,625 cells."""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from unas_lightning.spaces.nb201.genotype import EDGES, NODES, NB201Genotype
from unas_lightning.spaces.nb201.ops import NONE, ResidualReduction, make_op


class NB201Cell(nn.Module):
    """The derived cell: node j = sum over the edges i -> j that are not ``none`` of op(node i).

    A node without any input is zero; so is the output of a cell whose output node cannot be reached
    from its input (``NB201Genotype.connected``), as in the benchmark.
    """

    def __init__(self, genotype: NB201Genotype, channels: int):
        super().__init__()
        self.edges = [(to, frm) for (to, frm), op in zip(EDGES, genotype.ops, strict=True) if op != NONE]
        self.ops = nn.ModuleList(cast(nn.Module, make_op(op, channels)) for op in genotype.ops if op != NONE)

    def forward(self, x: Tensor) -> Tensor:
        nodes: list[Tensor | None] = [x, *([None] * (NODES - 1))]
        for (to, frm), op in zip(self.edges, self.ops, strict=True):
            if nodes[frm] is None:
                continue
            y = op(nodes[frm])
            nodes[to] = y if nodes[to] is None else nodes[to] + y
        out = nodes[-1]
        return torch.zeros_like(x) if out is None else out


class NB201Network(nn.Module):
    """The benchmark's network: stem, 3 stages of ``cells_per_stage`` cells at C, 2C and 4C channels with a
    ``ResidualReduction`` block between them, then batch norm, ReLU, global pooling and the classifier.

    With the defaults (C = 16, N = 5) and 3 input channels its parameter count is the table's model
    size for the cell (tested).

    Args:
        genotype: the cell (every cell of the network is the same).
        in_channels: image channels.
        num_classes: classifier outputs.
        channels: C, the width of the first stage.
        cells_per_stage: N.

    Examples:
        >>> import torch
        >>> g = NB201Genotype.from_table_key("333133")
        >>> net = NB201Network(g, in_channels=3, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape, sum(p.numel() for p in net.parameters())
        (torch.Size([2, 10]), 1288506)
    """

    def __init__(
        self,
        genotype: NB201Genotype,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: int = 16,
        cells_per_stage: int = 5,
    ):
        super().__init__()
        if channels < 1 or cells_per_stage < 1:
            raise ValueError(f"channels and cells_per_stage must be >= 1, got {channels} and {cells_per_stage}.")
        self.genotype = genotype
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers += [NB201Cell(genotype, c) for _ in range(cells_per_stage)]
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.head(self.cells(self.stem(x))))
