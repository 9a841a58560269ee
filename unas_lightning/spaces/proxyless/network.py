"""The plain network of a ProxylessNAS-space genotype: the chosen MBConv blocks, skipped layers removed."""

from __future__ import annotations

from torch import Tensor, nn

from unas_lightning.spaces.proxyless.genotype import SKIP, ProxylessGenotype, parse_op
from unas_lightning.spaces.proxyless.mbconv import MBConv, conv_bn_act


class Residual(nn.Module):
    """A block with an optional identity shortcut (derived networks)."""

    def __init__(self, block: nn.Module, residual: bool):
        super().__init__()
        self.block, self.residual = block, residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class ProxylessNet(nn.Module):
    """The plain network of a ProxylessNAS-space genotype: skipped layers are gone, no supernet parts.

    Args:
        genotype: the operations per layer and the backbone (widths, strides) they belong to.
        in_channels: image channels.
        num_classes: classifier outputs.
        dropout: dropout before the classifier.

    Examples:
        >>> import torch
        >>> from unas_lightning.spaces.proxyless import ProxylessBackbone, ProxylessGenotype
        >>> bb = ProxylessBackbone(first_conv=8, first_block=8, widths=(8, 16), depths=(2, 2), strides=(2, 2),
        ...                        feature_mix=32)
        >>> net = ProxylessNet(ProxylessGenotype(("3x3_MBConv3", "skip", "5x5_MBConv6", "skip"), bb), num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape, len(net.blocks)
        (torch.Size([2, 10]), 2)
    """

    def __init__(
        self, genotype: ProxylessGenotype, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.0
    ):
        super().__init__()
        genotype.check()
        bb = genotype.backbone
        self.genotype = genotype
        self.stem = conv_bn_act(in_channels, bb.first_conv, 3, bb.stem_stride)
        self.first_block = MBConv(bb.first_conv, bb.first_block, 3, 1, 1)
        blocks = []
        for (c_in, c_out, stride), op in zip(bb.layers(), genotype.ops, strict=True):
            if op == SKIP:
                continue
            kernel, expand = parse_op(op)
            blocks.append(Residual(MBConv(c_in, c_out, kernel, stride, expand), stride == 1 and c_in == c_out))
        self.blocks = nn.Sequential(*blocks)
        self.feature_mix = conv_bn_act(bb.widths[-1], bb.feature_mix, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bb.feature_mix, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.feature_mix(self.blocks(self.first_block(self.stem(x))))
        return self.classifier(self.dropout(self.pool(x).flatten(1)))
