"""The operations of the NAS-Bench-201 cell and the residual block between its stages.

Every edge of the cell maps C channels to C channels at stride 1 and is one of (the benchmark's order):

* ``none``: the zero map (the edge is absent);
* ``skip_connect``: the identity;
* ``nor_conv_1x1``, ``nor_conv_3x3``: ReLU -> convolution (no bias) -> batch norm;
* ``avg_pool_3x3``: 3x3 average pooling, stride 1, padding 1, the padding not counted.

Between the three stages a fixed residual block halves the resolution and doubles the channels
(``ResidualReduction``, a ResNet basic block whose shortcut is 2x2 average pooling then a 1x1
convolution). These are the benchmark's definitions; parameter counts of the networks built from them
match the benchmark's table (tested).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

#: The five candidate operations, in the benchmark's order (a table key's digit is an index into it).
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE = "none"

#: A batch norm factory: (channels) -> module. The derived networks use ``nn.BatchNorm2d`` with running
#: statistics (as the benchmark trained them); the supernet uses batch statistics only.
NormFactory = Callable[[int], nn.Module]


class ReLUConvBN(nn.Sequential):
    """ReLU, a k x k convolution without bias, batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: NormFactory = nn.BatchNorm2d):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            norm(c_out),
        )


def make_op(name: str, channels: int, norm: NormFactory = nn.BatchNorm2d) -> nn.Module | None:
    """The module of a cell operation at ``channels``; None for ``none`` (the edge adds nothing)."""
    if name == NONE:
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, norm)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, norm)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}; choose from {list(NB201_OPS)}.")


class ResidualReduction(nn.Module):
    """The fixed block between stages: a ResNet basic block with stride 2 that doubles the channels.

    out = ReLUConvBN_3x3(ReLUConvBN_3x3,stride 2(x)) + Conv_1x1(AvgPool_2x2(x)).
    """

    def __init__(self, c_in: int, c_out: int, norm: NormFactory = nn.BatchNorm2d):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, norm)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, norm)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2, padding=0), nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)
