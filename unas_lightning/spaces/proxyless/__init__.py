"""The ProxylessNAS MBConv search space (paper Sec. 5): supernet, blocks, genotype, network, drawing."""

from unas_lightning.spaces.proxyless.genotype import (
    MBCONV_OPS,
    PROXYLESS_OPS,
    SKIP,
    ProxylessBackbone,
    ProxylessGenotype,
)
from unas_lightning.spaces.proxyless.network import ProxylessNet
from unas_lightning.spaces.proxyless.space import ProxylessSpace

__all__ = [
    "MBCONV_OPS",
    "PROXYLESS_OPS",
    "SKIP",
    "ProxylessBackbone",
    "ProxylessGenotype",
    "ProxylessNet",
    "ProxylessSpace",
]
