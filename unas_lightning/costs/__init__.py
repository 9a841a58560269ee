"""Hardware costs (paper Sec. 3.1, 3.2 and 5): meters, the cost term of the search objective, the surrogate.

* ``Meter`` (``base.py``): ``measure(candidate) -> float``, the protocol of one cost; built in:
  ``MeasuredLatency`` (eager or compiled, CUDA events on a GPU), ``ParameterCount``, ``MultiplyAdds``,
  and ``NB201TableCost`` (NAS-Bench-201's own latency and size, read from its table).
* ``CostTerm`` (``term.py``): lambda * penalty(m(z)) through an unbiased black-box estimator, RELAX
  with the fitted linear surrogate of Sec. 5 by default; ``SearchModule(costs=[...])`` sums any number.
* ``fit_linear_surrogate`` (``surrogate.py``) and ``measure_latency`` (``latency.py``) stand alone too.
"""

from unas_lightning.costs.base import Candidate, Meter
from unas_lightning.costs.counts import MultiplyAdds, ParameterCount
from unas_lightning.costs.latency import Latency, MeasuredLatency, measure_latency
from unas_lightning.costs.surrogate import SurrogateFit, fit_linear_surrogate
from unas_lightning.costs.table import NB201TableCost
from unas_lightning.costs.term import CostTerm, PenalizedSurrogate, Penalty

__all__ = [
    "Candidate",
    "CostTerm",
    "Latency",
    "MeasuredLatency",
    "Meter",
    "MultiplyAdds",
    "NB201TableCost",
    "ParameterCount",
    "PenalizedSurrogate",
    "Penalty",
    "SurrogateFit",
    "fit_linear_surrogate",
    "measure_latency",
]
