"""Hardware costs (paper Sec. 3.1, 3.2 and 5): meters, the search objective's cost term, the linear cost model.

* ``Meter`` (``base.py``): ``measure(candidate) -> float``, the protocol of one cost; built in:
  ``MeasuredLatency`` (eager or compiled, CUDA events on a GPU), ``ParameterCount``, ``MultiplyAdds``,
  and ``NB201TableCost`` (NAS-Bench-201's own latency and size, read from its table).
* ``CostTerm`` (``term.py``): lambda * penalty(m(z)) through an unbiased black-box estimator, RELAX
  with the fitted linear cost model of Sec. 5 as its control by default; ``SearchModule(costs=[...])``
  sums any number.
* ``fit_linear_model`` (``linear_model.py``) and ``measure_latency`` (``latency.py``) stand alone too.
"""

from unas_lightning.costs.base import Candidate, Meter
from unas_lightning.costs.counts import MultiplyAdds, ParameterCount
from unas_lightning.costs.latency import Latency, MeasuredLatency, measure_latency
from unas_lightning.costs.linear_model import LinearFit, fit_linear_model
from unas_lightning.costs.table import NB201TableCost
from unas_lightning.costs.term import CostTerm, PenalizedControl, Penalty

__all__ = [
    "Candidate",
    "CostTerm",
    "Latency",
    "LinearFit",
    "MeasuredLatency",
    "Meter",
    "MultiplyAdds",
    "NB201TableCost",
    "ParameterCount",
    "PenalizedControl",
    "Penalty",
    "fit_linear_model",
    "measure_latency",
]
