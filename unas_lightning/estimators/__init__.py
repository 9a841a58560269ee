r"""Gradient estimators of d/dphi E_{p_phi(z)}[L(z)] (paper Sec. 3.1), one per file.

The contract (``base.py``, docs/contracts.md): ``surrogate(logits, loss_fn) -> EstimatorOutput``; the
caller steps phi only; every estimator builds with no arguments; state it learns stays inside it.
Internals, private (``_name.py``): ``_leave_one_out.py`` (the k-sample baseline), ``_cv_estimate.py``
(the REBAR/RELAX estimate), ``_control_variate.py`` (their tuned state), ``_relax_control.py`` (RELAX's
g: ``LinearControl``, public through this package). ``relaxation.py`` holds the biased relaxations;
``testing.py`` the exact gradients and z-scores that statistical tests use. A black-box estimator
(``BlackBox``) needs only values of the loss at one-hot architectures.

| class | gradient | unbiased | evaluations of loss_fn per step |
|---|---|---|---|
| ``Softmax`` | DARTS relaxation softmax(phi) | no | 1 relaxed |
| ``DartsSecondOrder`` | DARTS through a virtual w-step (finite-difference Hessian) | no | 4 relaxed, with w |
| ``GumbelSoftmax`` | SNAS reparameterized relaxed sample | no | 1 relaxed |
| ``Reinforce`` | score function, EMA baseline (Eq. 1/2) | yes | 1 discrete |
| ``Reinforce(num_samples=k)`` | RLOO: k samples, leave-one-out baselines | yes | k discrete |
| ``Rebar`` | REINFORCE + conditional Gumbel control variate (Eq. 3) | yes | k x (1 discrete + 2 relaxed) * |
| ``Relax`` | REINFORCE + surrogate g control variate (Eq. 5) | yes, for any g | k x 1 discrete (+ 2k of g) * |
| ``IndeCateR`` | every category of each row, others fixed | yes | 1 + sum_r (K_r - 1) discrete |
| ``UnorderedSet`` | k distinct samples (stochastic beam search), built-in baseline (Kool 2020) | yes | k discrete |
| ``StraightThroughGumbel`` | value at z, gradient of its relaxation zeta | no | 1 discrete, differentiated |
| ``ReinMax`` | straight-through, Heun's second-order correction (Liu et al. 2023) | no | 1 discrete, differentiated |

\* with the default independent zeta~; one relaxed evaluation with ``conditional="coupled"`` (it serves
c(zeta) and c(zeta~)). Self-tuning ``Rebar``/``Relax`` learn eta and beta in closed form at no
extra cost; learning the temperature too adds a double backward through the relaxed evaluations (no
extra evaluations of the loss). With per-example architectures (logits with a leading batch dimension B and a
loss_fn returning [B]) each evaluation covers all B examples at once.
"""

from unas_lightning.estimators._relax_control import LinearControl
from unas_lightning.estimators.base import BlackBox, Estimator, EstimatorOutput, LossFn
from unas_lightning.estimators.darts_second_order import DartsSecondOrder
from unas_lightning.estimators.gumbel_softmax import GumbelSoftmax
from unas_lightning.estimators.indecater import IndeCateR
from unas_lightning.estimators.rebar import Rebar
from unas_lightning.estimators.reinforce import Reinforce
from unas_lightning.estimators.reinmax import ReinMax
from unas_lightning.estimators.relax import Relax
from unas_lightning.estimators.relaxation import Relaxation
from unas_lightning.estimators.softmax import Softmax
from unas_lightning.estimators.straight_through import StraightThroughGumbel
from unas_lightning.estimators.unordered_set import UnorderedSet

__all__ = [
    "BlackBox",
    "DartsSecondOrder",
    "Estimator",
    "EstimatorOutput",
    "GumbelSoftmax",
    "IndeCateR",
    "LinearControl",
    "LossFn",
    "Rebar",
    "ReinMax",
    "Reinforce",
    "Relax",
    "Relaxation",
    "Softmax",
    "StraightThroughGumbel",
    "UnorderedSet",
]
