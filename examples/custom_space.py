"""A search space of one's own, in a user's module: a chain of convolution layers, one choice per layer.

Nothing inside ``unas_lightning`` changes. The space is one ``SearchSpace`` class, its result one
``Genotype`` class (defining it registers the space's name, so genotype files, retraining, summaries
and ``visualize`` find it), both chosen by ``class_path``::

    PYTHONPATH=examples unas-cli fit --config configs/search/quickstart.yaml --config examples/custom_space.yaml
    PYTHONPATH=examples unas-cli fit --config configs/retrain/quick_fmnist.yaml \
        --model.init_args.genotype runs/quickstart/latest/genotype.json
    PYTHONPATH=examples python -m unas_lightning.analysis.visualize runs/quickstart/latest/genotype.json

The chain: a stem convolution, then ``layers`` searchable layers of ``width`` channels (a 2x2 max-pool
after every second one), each one of

    conv3x3, conv5x5   ReLU -> k x k convolution -> batch norm
    sepconv3x3         ReLU -> 3x3 depthwise -> 1x1 pointwise -> batch norm
    skip               the identity (the layer is removed)

and a classifier. Every layer keeps its input as a residual, so ``skip`` removes the layer. The genotype
is the list of chosen operations and the width: ``{"space": "chain", "type": "custom_space.ChainGenotype",
"ops": [...], "width": 16}``. This space has no drawing (its genotype does not implement ``Drawable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from unas_lightning.spaces import Genotype, NetworkOptions, SearchSpace
from unas_lightning.spaces.plan import plan

CHOICES = ("conv3x3", "conv5x5", "sepconv3x3", "skip")


def make_op(name: str, width: int) -> nn.Module:
    """One candidate operation on ``width`` channels (shape-preserving)."""
    if name in ("conv3x3", "conv5x5"):
        k = int(name[-1])
        return nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, k, padding=k // 2, bias=False), nn.BatchNorm2d(width))
    if name == "sepconv3x3":
        return nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
            nn.Conv2d(width, width, 1, bias=False),
            nn.BatchNorm2d(width),
        )
    if name == "skip":
        return nn.Identity()
    raise ValueError(f"unknown chain operation {name!r}; choose from {list(CHOICES)}.")


def layer_key(i: int) -> str:
    return f"layer{i}"


@dataclass(frozen=True)
class ChainGenotype(Genotype):
    """The chosen operation of every layer of the chain, and the chain's width."""

    space_name = "chain"
    network_kinds = ("chain",)

    ops: tuple[str, ...]
    width: int = 16

    def encode(self) -> dict[str, Any]:
        return {"ops": list(self.ops), "width": self.width}

    @classmethod
    def decode(cls, data: dict[str, Any]) -> ChainGenotype:
        ops = data.get("ops")
        if not isinstance(ops, list) or not ops:
            raise ValueError("a chain genotype needs 'ops': a non-empty list, one operation per layer.")
        for i, op in enumerate(ops):
            if op not in CHOICES:
                raise ValueError(f"chain genotype layer {i}: unknown operation {op!r}; choose from {list(CHOICES)}.")
        return cls(ops=tuple(ops), width=int(data.get("width", 16)))

    def network(self, options: NetworkOptions) -> nn.Module:
        self.network_kind(options.kind)
        return ChainNet(self, options.in_channels, options.num_classes)


class ChainNet(nn.Module):
    """The plain network of a chain genotype: skipped layers are gone."""

    def __init__(self, genotype: ChainGenotype, in_channels: int, num_classes: int):
        super().__init__()
        width = genotype.width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.layers = nn.ModuleList(make_op(op, width) for op in genotype.ops)
        self.skipped = [op == "skip" for op in genotype.ops]
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for i, (layer, skipped) in enumerate(zip(self.layers, self.skipped, strict=True)):
            if not skipped:
                x = x + layer(x)
            if i % 2 == 1:
                x = self.pool(x)
        return self.head(x.mean((2, 3)))


class ChainSpace(SearchSpace):
    """The chain supernet: every layer holds all candidates and mixes or selects them by its logits row.

    Logits: ``layer{i}`` of shape [K] (K = 4 candidates). A one-hot row runs only the chosen candidate
    (``spaces.plan``); rows may carry a leading per-example dimension.

    Args:
        in_channels: image channels.
        num_classes: classifier outputs.
        layers: searchable layers.
        width: channels of every layer.

    Examples:
        >>> space = ChainSpace(layers=2, width=4)
        >>> space(torch.randn(2, 1, 28, 28), space.distribution().sample()).shape
        torch.Size([2, 10])
    """

    genotype_type = ChainGenotype

    def __init__(self, in_channels: int = 1, num_classes: int = 10, layers: int = 4, width: int = 16):
        super().__init__(in_channels, num_classes)
        if layers < 1 or width < 1:
            raise ValueError(f"ChainSpace needs layers >= 1 and width >= 1, got {layers} and {width}.")
        self.width = width
        self.arch = nn.ParameterDict({layer_key(i): nn.Parameter(torch.zeros(len(CHOICES))) for i in range(layers)})
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.layers = nn.ModuleList(nn.ModuleList(make_op(op, width) for op in CHOICES) for _ in range(layers))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor, arch: Mapping[str, Tensor]) -> Tensor:
        x = self.stem(x)
        rows = [arch[layer_key(i)] for i in range(len(self.layers))]
        for i, (candidates, mixture) in enumerate(zip(self.layers, plan(rows), strict=True)):
            out = None
            for j, coef in mixture.terms:
                if CHOICES[j] == "skip":
                    continue  # the identity adds nothing to the residual
                y = candidates[j](x)
                y = y if coef is None else y * coef
                out = y if out is None else out + y
            x = x if out is None else x + out
            if i % 2 == 1:
                x = self.pool(x)
        return self.head(x.mean((2, 3)))

    def genotype(self, arch: Mapping[str, Tensor] | None = None) -> ChainGenotype:
        arch = self.arch if arch is None else arch
        ops = tuple(CHOICES[int(arch[layer_key(i)].detach().argmax(-1))] for i in range(len(self.layers)))
        return ChainGenotype(ops=ops, width=self.width)

    def arch_of(self, genotype: ChainGenotype) -> dict[str, Tensor]:
        self.check_genotype(genotype)
        if len(genotype.ops) != len(self.layers) or genotype.width != self.width:
            raise ValueError(
                f"a chain genotype of {len(genotype.ops)} layers x {genotype.width} channels does not fit this "
                f"space of {len(self.layers)} layers x {self.width} channels."
            )
        return {
            layer_key(i): nn.functional.one_hot(torch.tensor(CHOICES.index(op)), len(CHOICES)).float()
            for i, op in enumerate(genotype.ops)
        }

    def derived_network(self, genotype: ChainGenotype | None = None) -> ChainNet:
        genotype = self.genotype() if genotype is None else genotype
        self.arch_of(genotype)  # fits this space
        return ChainNet(genotype, self.in_channels, self.num_classes).to(self.head.weight.device)

    def category_names(self, key: str) -> list[str]:
        return list(CHOICES)
