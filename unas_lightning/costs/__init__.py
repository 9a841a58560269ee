"""Hardware costs (paper Sec. 3.1, 3.2 and 5): meters, the search objective's cost term, the linear cost model.

* ``Meter`` (``base.py``): ``measure(candidate) -> float``, the protocol of one cost; built in:
  ``MeasuredLatency`` (eager or compiled, CUDA events on a GPU), ``ParameterCount``, ``MultiplyAdds``,
  and ``NB201TableCost`` (NAS-Bench-201's own latency and size, read from its table).
* ``CostTerm`` (``term.py``): lambda * penalty(m(z)) through an unbiased black-box estimator, RELAX
  with the fitted linear cost model of Sec. 5 as its control by default; ``SearchModule(costs=[...])``
  sums any number.
* Cost models g for RELAX's control: the paper's additive one (``estimators.LinearControl``) and two
  non-additive ones (``cost_models.py``: ``PairwiseControl``, ``MLPControl``), fitted and chosen by
  held-out error in ``fitting.py`` (``fit_cost_model``, ``fit_linear_model``).
* ``measure_latency`` (``latency.py``) stands alone too.
"""

from unas_lightning.costs.base import Candidate, Meter
from unas_lightning.costs.cost_models import MLPControl, PairwiseControl
from unas_lightning.costs.counts import MultiplyAdds, ParameterCount
from unas_lightning.costs.fitting import COST_MODELS, CostFit, LinearFit, fit_cost_model, fit_linear_model
from unas_lightning.costs.latency import Latency, MeasuredLatency, measure_latency
from unas_lightning.costs.table import NB201TableCost
from unas_lightning.costs.term import CostTerm, PenalizedControl, Penalty

__all__ = [
    "COST_MODELS",
    "Candidate",
    "CostFit",
    "CostTerm",
    "Latency",
    "LinearFit",
    "MLPControl",
    "MeasuredLatency",
    "Meter",
    "MultiplyAdds",
    "NB201TableCost",
    "PairwiseControl",
    "ParameterCount",
    "PenalizedControl",
    "Penalty",
    "fit_cost_model",
    "fit_linear_model",
    "measure_latency",
]
