"""IndeCateR: exact per-variable sums over each categorical's categories (De Smet et al. 2023)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import torch
from torch import Tensor

from unas_lightning.distributions import ArchDistribution
from unas_lightning.estimators.base import BlackBox, Estimator, EstimatorOutput, LossFn, loss_vector, strip_batch


class IndeCateR(Estimator, BlackBox):
    """Rao-Blackwellised score function that sums every category of one row with the others fixed.

    For each categorical row r with K_r categories and a sample z ~ p_phi, let z^{r=j} be z with row
    r set to category j. Because the rows are independent,

        d/dphi_r E[L(z)] = E_{z_-r} [ sum_j L(z^{r=j}) d/dphi_r p_phi(r = j) ]

    so each row's gradient is exact given the other rows' sample. The per-row mean of the K_r values
    is subtracted (it multiplies sum_j d p_j = 0, so it changes nothing in expectation and keeps the
    floating-point sum small). ``loss_fn`` is evaluated at one-hot architectures only and without
    gradient: it may be a table lookup or a measured latency.

    Cost per step: 1 + sum_r (K_r - 1) discrete evaluations (the sampled category of each row reuses
    L(z)). For the DARTS space (8 input rows and 8 op rows with 7 ops per cell type, 4 nodes) that is
    1 + 2 (4 x 6 + 1 + 2 + 3 + 4) = 69 evaluations; use it where the loss is cheap (a latency table,
    a small proxy). With per-example architectures the B examples share each evaluation (the row is
    set in every example at once), so the cost does not grow with B.

    Examples:
        >>> import torch
        >>> table = torch.tensor([[3.0, 1.0], [2.0, 0.5], [0.1, 4.0]])
        >>> logits = {"a": torch.zeros(3, requires_grad=True), "b": torch.zeros(2, requires_grad=True)}
        >>> loss = lambda z: table[int(z["a"].argmax()), int(z["b"].argmax())]
        >>> out = IndeCateR().surrogate(logits, loss)
        >>> out.loss.backward(); logits["a"].grad.shape
        torch.Size([3])
    """

    def surrogate(self, logits: Mapping[str, Tensor], loss_fn: LossFn) -> EstimatorOutput:
        dist = ArchDistribution(logits)
        z = dist.sample()
        with torch.no_grad():
            f_z = loss_vector(loss_fn(z), logits).detach()
        n = f_z.shape[0]
        lead = (slice(None),) if n > 1 else ()
        probs = dist.probs()
        loss = torch.zeros((), dtype=probs[next(iter(probs))].dtype, device=f_z.device)
        for key, rows in strip_batch(logits, n).items():
            for idx in itertools.product(*map(range, rows.shape[:-1])):
                row = (*lead, *idx)
                chosen = z[key][row].argmax(-1)  # [n] or scalar
                values = []
                for j in range(rows.shape[-1]):
                    if bool((chosen == j).all()):  # z^{r=j} is z itself
                        values.append(f_z)
                        continue
                    z_j = dict(z)
                    z_j[key] = z[key].clone()
                    z_j[key][row] = 0.0
                    z_j[key][(*row, j)] = 1.0
                    with torch.no_grad():
                        values.append(loss_vector(loss_fn(z_j), logits).detach())
                f = torch.stack(values, -1)  # [n, K]
                f = f - f.mean(-1, keepdim=True)
                p = probs[key][row].reshape(n, -1)
                loss = loss + (f * p).sum()
        return EstimatorOutput(loss=loss / n, arch=z, value=f_z.mean())
