"""Measured latency (paper Sec. 3.1, 3.2 and 5): timing, the linear surrogate, the search term, the callback."""

from unas_lightning.latency.callback import LatencyCallback
from unas_lightning.latency.measure import Latency, measure_latency
from unas_lightning.latency.surrogate import SurrogateFit, fit_linear_surrogate
from unas_lightning.latency.term import LatencyTerm

__all__ = ["Latency", "LatencyCallback", "LatencyTerm", "SurrogateFit", "fit_linear_surrogate", "measure_latency"]
