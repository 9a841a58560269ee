"""The ProxylessNAS MBConv search space (paper Sec. 5) and its derived networks.

A chain of searchable layers (21 for ImageNet: 6 stages of 4, 4, 4, 4, 4 and 1 layers) between a fixed
stem (3x3 convolution, MBConv1 3x3 block) and a fixed head (1x1 feature-mix convolution, pooling,
classifier). Each layer picks one of the MBConv blocks with kernel {3, 5, 7} x expansion {3, 6}, or
``skip`` (layer removal: only the residual shortcut remains) where the layer keeps its shape.
Logits: ``layer{i:02d}`` with shape [K_i], K_i = 7 where skip is allowed, 6 for the first
layer of a stage.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from unas_lightning.distributions import Arch
from unas_lightning.spaces.base import SearchSpace
from unas_lightning.spaces.plan import plan
from unas_lightning.spaces.proxyless.genotype import SKIP, ProxylessBackbone, ProxylessGenotype, parse_op
from unas_lightning.spaces.proxyless.mbconv import MBConv, conv_bn_act
from unas_lightning.spaces.proxyless.network import ProxylessNet


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
        return cast(Tensor, out)  # skip is a candidate only where the layer keeps its shape (residual)


class ProxylessSpace(SearchSpace[ProxylessGenotype]):
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

    genotype_type = ProxylessGenotype

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        backbone: ProxylessBackbone | None = None,
        stem_stride: int | None = None,
        channels_last: bool = True,
    ):
        super().__init__(in_channels, num_classes)
        bb = (backbone or ProxylessBackbone()).scaled(width_mult)
        if stem_stride is not None:
            bb = ProxylessBackbone(**{**bb.to_dict(), "stem_stride": stem_stride})
        self.backbone = bb
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
        """Per layer, the (op, coefficient) pairs to compute (``spaces.plan``)."""
        rows = [arch[layer_key(i)] for i in range(len(self.layers))]
        return [[(ops[j], c) for j, c in m.terms] for m, ops in zip(plan(rows), self.choices, strict=True)]

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
        arch = cast(Mapping[str, Tensor], self.arch) if arch is None else arch
        ops = tuple(c[int(arch[layer_key(i)].detach().argmax(-1))] for i, c in enumerate(self.choices))
        return ProxylessGenotype(ops=ops, backbone=self.backbone)

    def arch_of(self, genotype: ProxylessGenotype) -> Arch:
        """One-hot architecture of a genotype; raises ``ValueError`` if it does not fit this space."""
        self.check_genotype(genotype)
        genotype.check(self.backbone)
        return {
            layer_key(i): nn.functional.one_hot(torch.tensor(c.index(op)), len(c)).float()
            for i, (op, c) in enumerate(zip(genotype.ops, self.choices, strict=True))
        }

    def derived_network(self, genotype: ProxylessGenotype | None = None, copy_weights: bool = False) -> ProxylessNet:
        """The plain network of ``genotype`` (default: the most probable) at this space's widths.

        With ``copy_weights`` it carries the supernet's weights and computes exactly what the supernet
        computes with the one-hot architecture of the genotype (tested); else its weights are fresh.
        """
        genotype = genotype if genotype is not None else self.genotype()
        self.check_genotype(genotype)
        genotype.check(self.backbone)
        net = ProxylessNet(genotype, self.in_channels, self.num_classes)
        if copy_weights:  # copies keep the supernet's memory format; values are identical
            net.stem = copy.deepcopy(self.stem)
            net.first_block = copy.deepcopy(self.first_block)
            kept = [i for i, op in enumerate(genotype.ops) if op != SKIP]
            layers = cast("Sequence[SearchLayer]", self.layers)
            for block, i in zip(net.blocks, kept, strict=True):
                block.block = copy.deepcopy(layers[i].candidates[genotype.ops[i]])
            net.feature_mix = copy.deepcopy(self.feature_mix)
            net.classifier = copy.deepcopy(self.classifier)
        return net.to(next(self.parameters()).device)
