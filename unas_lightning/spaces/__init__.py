"""Search spaces: supernets with their architecture logits, genotypes and derived networks."""

from unas_lightning.spaces.base import SearchSpace
from unas_lightning.spaces.darts import DartsSpace
from unas_lightning.spaces.darts_genotype import DartsGenotype, Node
from unas_lightning.spaces.proxyless import ProxylessNet, ProxylessSpace
from unas_lightning.spaces.proxyless_genotype import ProxylessBackbone, ProxylessGenotype

__all__ = [
    "DartsGenotype",
    "DartsSpace",
    "Node",
    "ProxylessBackbone",
    "ProxylessGenotype",
    "ProxylessNet",
    "ProxylessSpace",
    "SearchSpace",
]
