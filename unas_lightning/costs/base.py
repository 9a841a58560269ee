"""The meter protocol: a hardware cost is a number measured on a candidate architecture.

A :class:`Meter` answers one question, ``measure(candidate) -> float``: the latency of the candidate's
network on this device, its parameter count, its multiply-adds, an energy reading, a table entry. A
``CostTerm`` (``costs/term.py``) turns a meter into a term of the search objective; the meter never
sees phi, estimators or DDP. Meters are chosen by ``class_path`` like everything else::

    costs:
      - class_path: unas_lightning.costs.CostTerm
        init_args:
          meter: unas_lightning.costs.ParameterCount
          weight: 0.5

Examples:
    A meter in a user's own module (``examples/custom_cost.py`` has a complete one)::

        class Depth(Meter):
            name, unit = "depth", "layers"

            def measure(self, candidate):
                return float(sum(1 for m in candidate.network.modules() if isinstance(m, nn.Conv2d)))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from unas_lightning.spaces.base import SearchSpace
from unas_lightning.spaces.genotype import Genotype


@dataclass
class Candidate:
    """What a meter may look at: one architecture of a search space.

    Attributes:
        genotype: the architecture as its genotype (a table meter looks it up).
        space: the search space it belongs to.
        example_shape: one input example's shape, e.g. (1, 28, 28).
        device: the device the search runs on (where a timing meter measures).
        network: the architecture's stand-alone network at the search's scale
            (``space.derived_network(genotype)``), built on first access.
    """

    genotype: Genotype
    space: SearchSpace
    example_shape: tuple[int, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @cached_property
    def network(self) -> nn.Module:
        return self.space.derived_network(self.genotype)


class Meter(ABC):
    """A hardware cost of an architecture: ``measure(candidate) -> float`` (see the module docstring).

    Class attributes:
        name: the default name of a cost built on this meter (logs: ``cost/<name>/...``).
        unit: the unit of the measured number, for logs and reports.
    """

    name: str = "cost"  # class attributes that a meter may also set per instance (``NB201TableCost``)
    unit: str = ""

    @abstractmethod
    def measure(self, candidate: Candidate) -> float:
        """The cost of ``candidate`` (a plain number, larger is costlier)."""

    def settings(self) -> dict[str, Any]:
        """The meter's settings, for reports (default: its public attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
