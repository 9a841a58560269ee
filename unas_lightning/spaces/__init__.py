"""Search spaces: the protocol every space follows, the genotype registry, and the built-in spaces.

A space is one package (supernet, ops, genotype, derived network, drawing) behind two small protocols,
:class:`SearchSpace` and :class:`Genotype` (``docs/contracts.md``). The built-in ones are ``darts``
(the factorized DARTS cell, Sec. 4.1) and ``proxyless`` (the ProxylessNAS MBConv chain, Sec. 5);
a space of one's own is a class in one's own module, chosen by ``class_path``.
"""

from unas_lightning.spaces.base import ArchitecturePenalty, GroupedForward, SearchSpace
from unas_lightning.spaces.darts import DartsGenotype, DartsSpace, Node
from unas_lightning.spaces.genotype import (
    Drawable,
    Genotype,
    NetworkOptions,
    SupportsDropPath,
    genotype_type,
    registered_spaces,
)
from unas_lightning.spaces.proxyless import ProxylessBackbone, ProxylessGenotype, ProxylessNet, ProxylessSpace

__all__ = [
    "ArchitecturePenalty",
    "DartsGenotype",
    "DartsSpace",
    "Drawable",
    "Genotype",
    "GroupedForward",
    "NetworkOptions",
    "Node",
    "ProxylessBackbone",
    "ProxylessGenotype",
    "ProxylessNet",
    "ProxylessSpace",
    "SearchSpace",
    "SupportsDropPath",
    "genotype_type",
    "registered_spaces",
]
