"""Device-free hardware proxies: parameter count and multiply-adds of a candidate's network."""

from __future__ import annotations

from unas_lightning.costs.base import Candidate, Meter
from unas_lightning.utils.network_size import count_parameters, multiply_adds


class ParameterCount(Meter):
    """Parameters of the candidate's network, in millions (an auxiliary head is not counted).

    Deterministic and device-free: a proxy for model size and memory that users ask for beside latency.

    Examples:
        >>> from unas_lightning.spaces import DartsSpace
        >>> space = DartsSpace(channels=4, layers=3)
        >>> ParameterCount().measure(Candidate(space.genotype(), space, (1, 28, 28))) > 0
        True
    """

    name, unit = "params", "M"

    def measure(self, candidate: Candidate) -> float:
        return count_parameters(candidate.network) / 1e6


class MultiplyAdds(Meter):
    """Multiply-adds of one forward pass of one example through the candidate's network, in millions.

    Deterministic and device-free (``torch.utils.flop_counter``): the FLOPs proxy of mobile NAS papers.
    """

    name, unit = "madds", "M"

    def measure(self, candidate: Candidate) -> float:
        return multiply_adds(candidate.network, candidate.example_shape) / 1e6
