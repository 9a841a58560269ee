"""The NAS-Bench-201 cell space: supernet, operations, genotype (with the benchmark's architecture
strings and table keys), the benchmark's network, drawing, and the benchmark's tables (``table``)."""

from unas_lightning.spaces.nb201.genotype import EDGES, NB201Genotype
from unas_lightning.spaces.nb201.network import NB201Cell, NB201Network
from unas_lightning.spaces.nb201.ops import NB201_OPS
from unas_lightning.spaces.nb201.space import NB201Space

__all__ = ["EDGES", "NB201_OPS", "NB201Cell", "NB201Genotype", "NB201Network", "NB201Space"]
