"""The ProxylessNAS MBConv search space (paper Sec. 5) and its derived networks.

A chain of searchable layers (21 for ImageNet: 6 stages of 4, 4, 4, 4, 4 and 1 layers) between a fixed
stem (3x3 convolution, MBConv1 3x3 block) and a fixed head (1x1 feature-mix convolution, pooling,
classifier). Each layer picks one of the MBConv blocks with kernel {3, 5, 7} x expansion {3, 6}, or
``skip`` (layer removal: only the residual shortcut remains) where the layer keeps its shape.
Logits (Contract 1): ``layer{i:02d}`` with shape [K_i], K_i = 7 where skip is allowed, 6 for the first
layer of a stage.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from unas_lightning.distributions import Arch, one_hot_argmax
from unas_lightning.spaces.base import SearchSpace
from unas_lightning.spaces.mbconv import MBConv, conv_bn_act
from unas_lightning.spaces.proxyless_genotype import SKIP, ProxylessBackbone, ProxylessGenotype, parse_op


def layer_key(i: int) -> str:
    return f"layer{i:02d}"


class SearchLayer(nn.Module):
    """Every candidate block of one layer; mixes or selects them with a row of coefficients."""

    def __init__(self, c_in: int, c_out: int, stride: int, ops: Sequence[str]):
        super().__init__()
        self.ops = tuple(ops)
        self.residual = stride == 1 and c_in == c_out
        self.candidates = nn.ModuleDict(
            {op: MBConv(c_in, c_out, parse_op(op)[0], stride, parse_op(op)[1]) for op in ops if op != SKIP}
        )

    def forward(self, x: Tensor, terms: Sequence[tuple[str, Tensor | None]]) -> Tensor:
        out = None
        for op, coef in terms:
            if op == SKIP:
                continue  # the removed layer contributes nothing but the shortcut
            y = self.candidates[op](x)
            if coef is not None:
                y = y * coef
            out = y if out is None else out + y
        if self.residual:
            return x if out is None else x + out
        return out


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
        >>> from unas_lightning.spaces.proxyless_genotype import ProxylessBackbone, ProxylessGenotype
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


class ProxylessSpace(SearchSpace):
    """ProxylessNAS MBConv supernet (Sec. 5): one categorical per searchable layer.

    With one-hot rows only the chosen block of each layer runs; with relaxed rows the candidates are
    mixed (the skip candidate contributes zero, so a layer's output is x + sum_k c_k MBConv_k(x)).
    Rows may carry a leading batch dimension for per-example architectures.

    Args:
        in_channels: image channels (3 for ImageNet/CIFAR, 1 for Fashion-MNIST).
        num_classes: classifier outputs.
        width_mult: multiplies every channel count of ``backbone`` (small proxies: e.g. 0.35).
        backbone: the fixed chain; default ProxylessNAS for ImageNet (21 layers).
        stem_stride: stride of the stem convolution (overrides the backbone's; 1 for 28x28 inputs).
        channels_last: run the supernet in the channels-last memory format (about 1.5-2x faster
            depthwise convolutions on CPU, the fast layout for cuDNN).

    Examples:
        >>> import torch
        >>> space = ProxylessSpace(in_channels=1, num_classes=10, width_mult=0.25, stem_stride=1)
        >>> len(space.arch), space.arch["layer00"].shape, space.arch["layer01"].shape
        (21, torch.Size([6]), torch.Size([7]))
        >>> space(torch.randn(2, 1, 28, 28), space.distribution().sample()).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        backbone: ProxylessBackbone | None = None,
        stem_stride: int | None = None,
        channels_last: bool = True,
    ):
        super().__init__()
        for name, value in [("in_channels", in_channels), ("num_classes", num_classes)]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ProxylessSpace: {name} must be a positive integer, got {value!r}.")
        bb = (backbone or ProxylessBackbone()).scaled(width_mult)
        if stem_stride is not None:
            bb = ProxylessBackbone(**{**bb.to_dict(), "stem_stride": stem_stride})
        self.backbone = bb
        self.in_channels, self.num_classes = in_channels, num_classes
        self.choices = bb.choices()
        self.arch = nn.ParameterDict(
            {layer_key(i): nn.Parameter(torch.zeros(len(c))) for i, c in enumerate(self.choices)}
        )
        self.stem = conv_bn_act(in_channels, bb.first_conv, 3, bb.stem_stride)
        self.first_block = MBConv(bb.first_conv, bb.first_block, 3, 1, 1)
        self.layers = nn.ModuleList(
            SearchLayer(c_in, c_out, stride, ops)
            for (c_in, c_out, stride), ops in zip(bb.layers(), self.choices, strict=True)
        )
        self.feature_mix = conv_bn_act(bb.widths[-1], bb.feature_mix, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(bb.feature_mix, num_classes)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # -- forward -------------------------------------------------------------------------------
    def plan(self, arch: Mapping[str, Tensor]) -> list[list[tuple[str, Tensor | None]]]:
        """Per layer, the (op, coefficient) pairs to compute; one host synchronisation in all."""
        rows = [arch[layer_key(i)] for i in range(len(self.layers))]
        flags = torch.cat(
            [
                torch.cat(
                    [
                        (r.detach() != 0).reshape(-1, r.shape[-1]).any(0),
                        (r.detach() == 1).reshape(-1, r.shape[-1]).all(0),
                    ]
                )
                for r in rows
            ]
        ).tolist()
        plans, pos = [], 0
        for r, ops in zip(rows, self.choices, strict=True):
            k = len(ops)
            nonzero, all_one = flags[pos : pos + k], flags[pos + k : pos + 2 * k]
            pos += 2 * k
            terms = []
            for j, op in enumerate(ops):
                if not nonzero[j]:
                    continue
                if all_one[j] and not r.requires_grad:
                    coef = None
                else:
                    coef = r[..., j]
                    coef = coef.reshape(-1, 1, 1, 1) if coef.dim() > 0 else coef
                terms.append((op, coef))
            plans.append(terms)
        return plans

    def forward(self, x: Tensor, arch: Mapping[str, Tensor]) -> Tensor:
        """Logits of the network selected (one-hot rows) or mixed (relaxed rows) by ``arch``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.first_block(self.stem(x))
        for layer, terms in zip(self.layers, self.plan(arch), strict=True):
            x = layer(x, terms)
        return self.classifier(self.pool(self.feature_mix(x)).flatten(1))

    # -- genotypes -------------------------------------------------------------------------------
    def category_names(self, key: str) -> list[str]:
        """The candidate blocks of the layer ``key`` (the columns of its logits)."""
        return list(self.choices[int(key.removeprefix("layer"))])

    def genotype(self, arch: Mapping[str, Tensor] | None = None) -> ProxylessGenotype:
        """Genotype of ``arch`` (default: the most probable architecture)."""
        arch = self.arch if arch is None else arch
        ops = tuple(c[int(arch[layer_key(i)].detach().argmax(-1))] for i, c in enumerate(self.choices))
        return ProxylessGenotype(ops=ops, backbone=self.backbone)

    def arch_of(self, genotype: ProxylessGenotype) -> Arch:
        """One-hot architecture of a genotype; raises ``ValueError`` if it does not fit this space."""
        genotype.check(self.backbone)
        return {
            layer_key(i): nn.functional.one_hot(torch.tensor(c.index(op)), len(c)).float()
            for i, (op, c) in enumerate(zip(genotype.ops, self.choices, strict=True))
        }

    def mode(self) -> Arch:
        return {k: one_hot_argmax(v.detach()) for k, v in self.arch.items()}

    def derived_network(self, genotype: ProxylessGenotype | None = None, copy_weights: bool = True) -> ProxylessNet:
        """The plain network of ``genotype`` (default: the most probable), with the supernet's weights.

        The result computes exactly what the supernet computes with the one-hot architecture of the
        genotype, on the same weights (tested).
        """
        genotype = genotype if genotype is not None else self.genotype()
        genotype.check(self.backbone)
        net = ProxylessNet(genotype, self.in_channels, self.num_classes)
        if copy_weights:  # copies keep the supernet's memory format; values are identical
            net.stem = copy.deepcopy(self.stem)
            net.first_block = copy.deepcopy(self.first_block)
            kept = [i for i, op in enumerate(genotype.ops) if op != SKIP]
            for block, i in zip(net.blocks, kept, strict=True):
                block.block = copy.deepcopy(self.layers[i].candidates[genotype.ops[i]])
            net.feature_mix = copy.deepcopy(self.feature_mix)
            net.classifier = copy.deepcopy(self.classifier)
        return net.to(next(self.parameters()).device)
