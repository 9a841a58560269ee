"""Evaluation networks of DARTS-space genotypes (paper Sec. 4: cells stacked and retrained from scratch).

``DartsNetworkCIFAR`` is the CIFAR setting of DARTS/UNAS (20 cells, 36 initial channels, auxiliary
head after the cell at 2/3 depth, drop-path); ``DartsNetworkImageNet`` the ImageNet mobile setting
(14 cells, 48 channels, a stem of three stride-2 convolutions, auxiliary head). Both accept any number
of input channels (1 for Fashion-MNIST, 3 for CIFAR/ImageNet). Every intermediate node is
concatenated into the cell output (the factorized cell has no pruning step).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from unas_lightning.spaces.darts.genotype import DartsGenotype
from unas_lightning.spaces.darts.ops import OPS, FactorizedReduce, ReLUConvBN
from unas_lightning.spaces.genotype import SupportsDropPath


def reduction_layers(layers: int) -> set[int]:
    """Indices of the reduction cells: at 1/3 and 2/3 of the depth, as in DARTS."""
    return {layers // 3, 2 * layers // 3}


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole examples of a branch with probability ``drop_prob`` (rescaling the rest)."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    """A fixed cell of a genotype: node n = op_a(state_i) + op_b(state_j)."""

    def __init__(self, genotype: DartsGenotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        nodes = genotype.nodes("reduce" if reduction else "normal")
        self.inputs = [node.inputs for node in nodes]
        self.ops = nn.ModuleList(
            nn.ModuleList(
                OPS[op](c, 2 if reduction and i < 2 else 1, True, True)
                for i, op in zip(node.inputs, node.ops, strict=True)
            )
            for node in nodes
        )
        self.multiplier = len(nodes)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for inputs, ops in zip(self.inputs, self.ops, strict=True):
            out = 0
            for i, op in zip(inputs, cast(nn.ModuleList, ops), strict=True):
                h = op(states[i])
                if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                out = out + h
            states.append(out)
        return torch.cat(states[2:], dim=1)


class AuxPool(nn.Module):
    """DARTS's auxiliary-head average pooling; small maps (e.g. 7x7 from 28x28 images) pool to 2x2."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.pool = nn.AvgPool2d(kernel, stride=stride, padding=0, count_include_pad=False)
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[-2:]) < self.kernel + self.stride:  # the DARTS pooling would leave less than 2x2
            return nn.functional.adaptive_avg_pool2d(x, 2)
        return self.pool(x)


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier: 5x5 average pooling (stride 3 on CIFAR's 8x8 maps, 2 on ImageNet's 14x14),
    1x1 convolution to 128, 2x2 convolution to 768, linear classifier."""

    def __init__(self, c: int, num_classes: int, pool_stride: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            AuxPool(5, pool_stride),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class _DartsNetwork(nn.Module, SupportsDropPath):
    """Shared body: cells, auxiliary head at 2/3 depth, global pooling, classifier."""

    aux_pool_stride: int = 3

    def _build_cells(
        self,
        genotype: DartsGenotype,
        layers: int,
        c: int,
        c_stem: int,
        reduction_prev: bool,
        num_classes: int,
        auxiliary: bool,
    ) -> None:
        genotype.check(None, tuple(OPS))
        c_pp, c_p, c_curr = c_stem, c_stem, c
        self.cells = nn.ModuleList()
        reductions = reduction_layers(layers)
        self.aux_position = 2 * layers // 3
        c_aux: int | None = None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = Cell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            reduction_prev = reduction
            self.cells.append(cell)
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_p
        # named ``auxiliary``: ``counting.count_parameters`` leaves it out, as papers do
        # c_aux: set by the cell at aux_position (< layers)
        self.auxiliary = AuxiliaryHead(cast(int, c_aux), num_classes, self.aux_pool_stride) if auxiliary else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def stem_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Logits; in training mode with an auxiliary head, (logits, auxiliary logits)."""
        s0, s1 = self.stem_forward(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary is not None and self.training:
                aux = self.auxiliary(s1)
        logits = self.classifier(self.pool(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


class DartsNetworkCIFAR(_DartsNetwork):
    """The DARTS/UNAS CIFAR evaluation network of a genotype.

    Args:
        genotype: the normal and reduction cells.
        in_channels: image channels.
        num_classes: classifier outputs.
        channels: initial channels C (paper: 36).
        layers: number of cells (paper: 20).
        auxiliary: add the auxiliary head after the cell at 2/3 depth (paper: weight 0.4).
        stem_multiplier: the stem has ``stem_multiplier * C`` channels.
        stem_stride: stride of the stem convolution (2: a search supernet's cheaper stem).

    ``drop_path_prob`` is an attribute set by the training loop (linear ramp, paper: up to 0.2 / 0.3).

    Examples:
        >>> import torch
        >>> from unas_lightning.genotypes import load_genotype
        >>> net = DartsNetworkCIFAR(load_genotype("DARTS_V2"), in_channels=1, channels=8, layers=5).eval()
        >>> net(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    aux_pool_stride = 3

    def __init__(
        self,
        genotype: DartsGenotype,
        in_channels: int = 3,
        num_classes: int = 10,
        channels: int = 36,
        layers: int = 20,
        auxiliary: bool = True,
        stem_multiplier: int = 3,
        stem_stride: int = 1,
    ):
        super().__init__()
        self.drop_path_prob = 0.0
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(c_stem)
        )
        self._build_cells(genotype, layers, channels, c_stem, False, num_classes, auxiliary)

    def stem_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.stem(x)
        return s, s


class DartsNetworkImageNet(_DartsNetwork):
    """The DARTS/UNAS ImageNet (mobile setting) evaluation network of a genotype.

    Args:
        genotype: the normal and reduction cells.
        in_channels: image channels.
        num_classes: classifier outputs.
        channels: initial channels C (paper: 48).
        layers: number of cells (paper: 14).
        auxiliary: add the auxiliary head after the cell at 2/3 depth.
    """

    aux_pool_stride = 2

    def __init__(
        self,
        genotype: DartsGenotype,
        in_channels: int = 3,
        num_classes: int = 1000,
        channels: int = 48,
        layers: int = 14,
        auxiliary: bool = True,
    ):
        super().__init__()
        self.drop_path_prob = 0.0
        c = channels
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c)
        )
        self._build_cells(genotype, layers, c, c, True, num_classes, auxiliary)

    def stem_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)
