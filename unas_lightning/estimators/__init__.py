"""Gradient estimators of d/dphi E_{p_phi(z)}[L(z)] (paper Sec. 3.1), one per file.

| class | gradient | unbiased | evaluations of loss_fn per step |
|---|---|---|---|
| ``Softmax`` | DARTS relaxation softmax(phi) | no | 1 relaxed |
| ``GumbelSoftmax`` | SNAS reparameterized relaxed sample | no | 1 relaxed |
| ``Reinforce`` | score function, EMA baseline (Eq. 1/2) | yes | 1 discrete |
| ``Rebar`` | REINFORCE + conditional Gumbel control variate (Eq. 3) | yes | 1 discrete + 2 relaxed |
| ``Relax`` | REINFORCE + surrogate g control variate (Eq. 5) | yes, for any g | 1 discrete + 2 of g |
"""

from unas_lightning.estimators.base import Estimator, EstimatorOutput, LossFn
from unas_lightning.estimators.gumbel_softmax import GumbelSoftmax
from unas_lightning.estimators.rebar import Rebar
from unas_lightning.estimators.reinforce import Reinforce
from unas_lightning.estimators.relax import Relax
from unas_lightning.estimators.softmax import Softmax

__all__ = ["Estimator", "EstimatorOutput", "GumbelSoftmax", "LossFn", "Rebar", "Reinforce", "Relax", "Softmax"]
