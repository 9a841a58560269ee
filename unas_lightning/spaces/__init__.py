"""Search spaces: the protocol every space follows, the genotype registry, and the built-in spaces.

A space is one package (supernet, ops, genotype, derived network, drawing) behind two small protocols,
:class:`SearchSpace` and :class:`Genotype` (``docs/contracts.md``). The built-in ones are ``darts``
(the factorized DARTS cell, Sec. 4.1), ``proxyless`` (the ProxylessNAS MBConv chain, Sec. 5) and
``nb201`` (the NAS-Bench-201 cell, with the benchmark's tables);
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
from unas_lightning.spaces.nb201 import NB201Genotype, NB201Network, NB201Space
from unas_lightning.spaces.proxyless import ProxylessBackbone, ProxylessGenotype, ProxylessNet, ProxylessSpace

__all__ = [
    "ArchitecturePenalty",
    "DartsGenotype",
    "DartsSpace",
    "Drawable",
    "Genotype",
    "GroupedForward",
    "NB201Genotype",
    "NB201Network",
    "NB201Space",
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
