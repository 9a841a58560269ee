"""The DARTS search space with the factorized cell (paper Sec. 4.1): supernet, ops, genotype, networks, drawing."""

from unas_lightning.spaces.darts.genotype import CELL_TYPES, DartsGenotype, Node
from unas_lightning.spaces.darts.network import DartsNetworkCIFAR, DartsNetworkImageNet
from unas_lightning.spaces.darts.ops import IMAGENET_PRIMITIVES, OPS, PRIMITIVES
from unas_lightning.spaces.darts.space import DartsSpace

__all__ = [
    "CELL_TYPES",
    "IMAGENET_PRIMITIVES",
    "OPS",
    "PRIMITIVES",
    "DartsGenotype",
    "DartsNetworkCIFAR",
    "DartsNetworkImageNet",
    "DartsSpace",
    "Node",
]
