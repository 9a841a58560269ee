"""Candidate operations of the DARTS search space (Liu et al. 2019), in the UNAS code's order.

Every op maps [B, C, H, W] -> [B, C, H / stride, W / stride]. ``affine=False`` batch norms are
used inside the supernet (DARTS search practice); derived networks use affine ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from unas_lightning.spaces.batch_groups import GroupedBatchNorm2d

#: The paper's seven operations, in the order of the official UNAS code.
PRIMITIVES: tuple[str, ...] = (
    "skip_connect",
    "sep_conv_3x3",
    "max_pool_3x3",
    "dil_conv_3x3",
    "sep_conv_5x5",
    "avg_pool_3x3",
    "sep_conv_7x7",
)
#: The reduced ImageNet search space of Sec. 4.1 (the first five of the official code's list).
IMAGENET_PRIMITIVES: tuple[str, ...] = PRIMITIVES[:5]


def _bn(channels: int, affine: bool, track: bool) -> nn.BatchNorm2d:
    return GroupedBatchNorm2d(channels, affine=affine, track_running_stats=track)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN, the preprocessing of cell inputs."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True, track: bool = True
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            _bn(c_out, affine, track),
        )


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
        track: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            _bn(c_out, affine, track),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv blocks with dilation 1 (the DARTS separable convolution)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True, track: bool = True
    ) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1, affine, track),
            DilConv(c_in, c_out, kernel, 1, padding, 1, affine, track),
        )


class FactorizedReduce(nn.Module):
    """Halves the resolution with two offset strided 1x1 convs (a skip across a reduction)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True, track: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}.")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = _bn(c_out, affine, track)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        y = x[:, :, 1:, 1:]
        odd_h, odd_w = x.shape[-2] % 2, x.shape[-1] % 2
        if odd_h or odd_w:  # odd sizes: pad the shifted branch so both give ceil(H / 2)
            y = nn.functional.pad(y, (0, odd_w, 0, odd_h))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(y)], dim=1))


def _pool(kind: str, stride: int) -> nn.Module:
    if kind == "max":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


OpFactory = Callable[[int, int, bool, bool], nn.Module]

#: name -> factory(channels, stride, affine, track_running_stats)
OPS: dict[str, OpFactory] = {
    "skip_connect": lambda c, s, a, t: nn.Identity() if s == 1 else FactorizedReduce(c, c, a, t),
    "max_pool_3x3": lambda c, s, a, t: _pool("max", s),
    "avg_pool_3x3": lambda c, s, a, t: _pool("avg", s),
    "sep_conv_3x3": lambda c, s, a, t: SepConv(c, c, 3, s, 1, a, t),
    "sep_conv_5x5": lambda c, s, a, t: SepConv(c, c, 5, s, 2, a, t),
    "sep_conv_7x7": lambda c, s, a, t: SepConv(c, c, 7, s, 3, a, t),
    "dil_conv_3x3": lambda c, s, a, t: DilConv(c, c, 3, s, 2, 2, a, t),
    "dil_conv_5x5": lambda c, s, a, t: DilConv(c, c, 5, s, 4, 2, a, t),
}


def check_ops(ops: str | Iterable[str]) -> tuple[str, ...]:
    """Validate a list of operation names (or a preset name) and return it as a tuple."""
    if isinstance(ops, str):
        presets = {"paper": PRIMITIVES, "imagenet": IMAGENET_PRIMITIVES}
        if ops not in presets:
            raise ValueError(f"unknown op preset {ops!r}; use one of {sorted(presets)} or a list of op names.")
        return presets[ops]
    ops = tuple(ops)
    unknown = [o for o in ops if o not in OPS]
    if unknown:
        raise ValueError(f"unknown operation(s) {unknown}; choose from {sorted(OPS)}.")
    if len(set(ops)) != len(ops) or len(ops) < 2:
        raise ValueError(f"ops must list at least two distinct operations, got {list(ops)}.")
    return ops
