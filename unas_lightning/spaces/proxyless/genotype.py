"""The ProxylessNAS space's backbone and genotypes (one operation per searchable layer), as JSON.

A genotype names the operation of each of the searchable layers and carries the backbone it was
searched in (widths, depths, strides), so that published networks with their own widths, like
ProxylessNAS-GPU, are genotypes too::

    {"space": "proxyless",
     "ops": ["5x5_MBConv3", "skip", ..., "7x7_MBConv6"],
     "backbone": {"first_conv": 32, "first_block": 16, "widths": [24, 40, 80, 96, 192, 320], ...}}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from unas_lightning.spaces.genotype import Drawable, Genotype, NetworkOptions
from unas_lightning.spaces.proxyless.mbconv import make_divisible

#: MBConv candidates of ProxylessNAS (kernel x expansion) in the official order, then layer removal.
MBCONV_OPS = ("3x3_MBConv3", "3x3_MBConv6", "5x5_MBConv3", "5x5_MBConv6", "7x7_MBConv3", "7x7_MBConv6")
SKIP = "skip"
PROXYLESS_OPS = (*MBCONV_OPS, SKIP)


def parse_op(name: str) -> tuple[int, int]:
    """(kernel, expansion) of an MBConv op name such as ``"5x5_MBConv6"``."""
    if name not in MBCONV_OPS:
        raise ValueError(f"unknown ProxylessNAS operation {name!r}; choose from {list(PROXYLESS_OPS)}.")
    kernel, expand = name.split("_MBConv")
    return int(kernel.split("x")[0]), int(expand)


@dataclass(frozen=True)
class ProxylessBackbone:
    """Fixed part of the MBConv chain (ProxylessNAS for ImageNet by default: 21 searchable layers).

    Attributes:
        first_conv: channels of the 3x3 stride-2 stem convolution.
        first_block: channels of the fixed MBConv1 3x3 block after the stem.
        widths: output channels of each stage.
        depths: searchable layers per stage (the first layer of a stage changes shape: no skip).
        strides: stride of the first layer of each stage.
        feature_mix: channels of the 1x1 convolution before pooling.
        stem_stride: stride of the stem (2 for ImageNet; 1 keeps small proxy inputs such as 28x28 larger).
    """

    first_conv: int = 32
    first_block: int = 16
    widths: tuple[int, ...] = (24, 40, 80, 96, 192, 320)
    depths: tuple[int, ...] = (4, 4, 4, 4, 4, 1)
    strides: tuple[int, ...] = (2, 2, 2, 1, 2, 1)
    feature_mix: int = 1280
    stem_stride: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if not len(self.widths) == len(self.depths) == len(self.strides):
            raise ValueError(
                f"backbone widths, depths and strides need one entry per stage, got "
                f"{len(self.widths)}, {len(self.depths)}, {len(self.strides)}."
            )
        for name in ("first_conv", "first_block", "feature_mix"):
            if getattr(self, name) < 1:
                raise ValueError(f"backbone {name} must be >= 1, got {getattr(self, name)}.")
        if any(v < 1 for v in (*self.widths, *self.depths)) or any(s not in (1, 2) for s in self.strides):
            raise ValueError("backbone widths and depths must be >= 1 and strides 1 or 2.")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"backbone stem_stride must be 1 or 2, got {self.stem_stride}.")

    def scaled(self, width_mult: float) -> ProxylessBackbone:
        """The backbone with every channel count multiplied by ``width_mult`` (rounded to multiples of 8)."""
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}.")
        if width_mult == 1.0:
            return self
        return replace(
            self,
            first_conv=make_divisible(self.first_conv * width_mult),
            first_block=make_divisible(self.first_block * width_mult),
            widths=tuple(make_divisible(w * width_mult) for w in self.widths),
            feature_mix=make_divisible(self.feature_mix * max(1.0, width_mult)),
        )

    def layers(self) -> list[tuple[int, int, int]]:
        """(c_in, c_out, stride) of every searchable layer, in order."""
        out, c_in = [], self.first_block
        for width, depth, stride in zip(self.widths, self.depths, self.strides, strict=True):
            for i in range(depth):
                out.append((c_in, width, stride if i == 0 else 1))
                c_in = width
        return out

    def choices(self) -> list[tuple[str, ...]]:
        """Candidate ops of each layer: the 6 MBConvs, plus skip where the layer keeps its shape."""
        return [PROXYLESS_OPS if s == 1 and a == b else MBCONV_OPS for a, b, s in self.layers()]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class ProxylessGenotype(Genotype, Drawable):
    """One operation name per searchable layer (``"skip"`` removes the layer) and the backbone.

    Its network (``network_kinds``): ``"proxyless"``, the plain MBConv chain (``ProxylessNet``).
    """

    space_name = "proxyless"
    space_title = "ProxylessNAS"
    network_kinds = ("proxyless",)

    ops: tuple[str, ...]
    backbone: ProxylessBackbone = ProxylessBackbone()

    def check(self, backbone: ProxylessBackbone | None = None) -> None:
        """Raise ``ValueError`` naming the first layer that does not fit ``backbone`` (default: its own)."""
        backbone = backbone or self.backbone
        choices = backbone.choices()
        if len(self.ops) != len(choices):
            raise ValueError(f"genotype has {len(self.ops)} layers but the space has {len(choices)} searchable layers.")
        for i, (op, allowed) in enumerate(zip(self.ops, choices, strict=True)):
            if op not in allowed:
                why = " (the first layer of a stage changes shape and cannot be skipped)" if op == SKIP else ""
                raise ValueError(
                    f"genotype layer {i}: operation {op!r} is not allowed{why}; choose from {list(allowed)}."
                )

    def depth(self) -> int:
        """Number of MBConv layers kept (skips removed)."""
        return sum(op != SKIP for op in self.ops)

    # -- JSON ------------------------------------------------------------------------------------
    def encode(self) -> dict[str, Any]:
        return {"ops": list(self.ops), "backbone": self.backbone.to_dict()}

    @classmethod
    def decode(cls, data: dict[str, Any]) -> ProxylessGenotype:
        if not isinstance(data.get("ops"), Sequence) or isinstance(data.get("ops"), str):
            raise ValueError("a ProxylessNAS genotype needs 'ops': a list of operation names, one per layer.")
        try:
            backbone = ProxylessBackbone(**data.get("backbone", {}))
        except TypeError as err:
            raise ValueError(f"genotype backbone: {err}") from err
        genotype = cls(ops=tuple(str(o) for o in data["ops"]), backbone=backbone)
        genotype.check()
        return genotype

    # -- networks and drawings ---------------------------------------------------------------------
    def network(self, options: NetworkOptions) -> nn.Module:
        """The plain MBConv network (``ProxylessNet``); ``options.dropout`` before the classifier."""
        from unas_lightning.spaces.proxyless.network import ProxylessNet

        self.network_kind(options.kind)
        return ProxylessNet(self, options.in_channels, options.num_classes, options.dropout)

    def draw(self, out_dir: Path, stem: str) -> list[Path]:
        """The chain of MBConv blocks as a PNG (paper Fig. 5)."""
        from unas_lightning.spaces.proxyless.drawing import draw_network

        return [draw_network(self, out_dir / f"{stem}_network.png")]
