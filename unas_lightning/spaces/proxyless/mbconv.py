"""Mobile inverted bottleneck convolution (MBConv, MobileNetV2), the block of the ProxylessNAS space."""

from __future__ import annotations

from torch import Tensor, nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` (not below 90% of it), as MobileNetV2."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def conv_bn_act(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """1x1 expansion (skipped for ratio 1), k x k depthwise convolution, linear 1x1 projection.

    The residual connection is added by the layer that owns the block (it depends on the layer's
    stride and widths, and a removed layer keeps only the shortcut).

    Args:
        c_in: input channels.
        c_out: output channels.
        kernel: depthwise kernel size (3, 5 or 7 in ProxylessNAS).
        stride: depthwise stride.
        expand: expansion ratio e (hidden channels = e * c_in).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.kernel, self.stride, self.expand = kernel, stride, expand
        self.expand_conv = conv_bn_act(c_in, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn_act(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn_act(hidden, c_out, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.depthwise(self.expand_conv(x)))
