"""The linear cost model g(z) = sum_ij l_ij z_ij + b (paper Sec. 5), fitted by ridge regression.

As in ProxylessNAS and the paper, N architectures are sampled uniformly before search, measured (timed,
for latency), and the per-choice costs l_ij fitted by L2-regularised least squares; a held-out part of
the samples gives the model's error (MAE in the cost's unit and MAPE in %). The model is only RELAX's
control variate (its g, a ``LinearControl``): the search optimizes the measured cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unas_lightning.distributions import Arch
from unas_lightning.estimators import LinearControl


def arch_features(archs: Sequence[Mapping[str, Tensor]], keys: Sequence[str]) -> Tensor:
    """[N, D] float64 matrix of the concatenated one-hot rows of each architecture, in ``keys`` order."""
    return torch.stack([torch.cat([a[k].detach().reshape(-1).double().cpu() for k in keys]) for a in archs])


@dataclass
class LinearFit:
    """A fitted linear model and its errors (train and held-out)."""

    model: LinearControl
    train_mae: float
    test_mae: float
    test_mape: float  # percent
    n_train: int
    n_test: int

    def as_dict(self) -> dict[str, float]:
        return {
            "train_mae": self.train_mae,
            "test_mae": self.test_mae,
            "test_mape": self.test_mape,
            "n_train": self.n_train,
            "n_test": self.n_test,
        }


def ridge(x: Tensor, y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Ridge regression with an unpenalised intercept: (weights [D], bias)."""
    x_mean, y_mean = x.mean(0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(gram, xc.T @ yc)
    return w, y_mean - x_mean @ w


def fit_linear_model(
    archs: Sequence[Arch],
    values: Sequence[float] | Tensor,
    holdout: float = 0.2,
    alpha: float = 1e-3,
    seed: int = 0,
) -> LinearFit:
    """Fit g(z) = sum l_ij z_ij + b to measured costs; report held-out MAE and MAPE.

    Args:
        archs: one-hot architectures (all with the same keys and shapes).
        values: their measured costs.
        holdout: fraction kept out of the fit for the error report (0 fits on everything and reports
            the training error in the test fields).
        alpha: ridge penalty on the per-choice coefficients.
        seed: seed of the train/held-out split.

    Examples:
        >>> import torch
        >>> archs = [{"op": torch.nn.functional.one_hot(torch.tensor(i % 3), 3).float()} for i in range(30)]
        >>> fit = fit_linear_model(archs, [1.0 + (i % 3) for i in range(30)], alpha=1e-6)
        >>> round(float(fit.model({"op": torch.tensor([0.0, 0.0, 1.0])})), 3)
        3.0
    """
    if len(archs) < 2:
        raise ValueError(f"need at least 2 measured architectures to fit a linear model, got {len(archs)}.")
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must lie in [0, 1), got {holdout}.")
    keys = list(archs[0])
    x = arch_features(archs, keys)
    y = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} architectures but {y.shape[0]} values.")
    n_test = round(holdout * len(archs))
    perm = torch.randperm(len(archs), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:n_test], perm[n_test:]
    w, b = ridge(x[train], y[train], alpha)
    pred = x @ w + b
    train_mae = (pred[train] - y[train]).abs().mean().item()
    if n_test:
        err = (pred[test] - y[test]).abs()
        test_mae, test_mape = err.mean().item(), (100 * err / y[test].abs().clamp_min(1e-12)).mean().item()
    else:
        test_mae = train_mae
        test_mape = (100 * (pred - y).abs() / y.abs().clamp_min(1e-12)).mean().item()
    model = LinearControl({k: tuple(archs[0][k].shape) for k in keys})
    with torch.no_grad():
        pos = 0
        for k in keys:
            n = archs[0][k].numel()
            model.weight[k].copy_(w[pos : pos + n].reshape(archs[0][k].shape).float())
            pos += n
        model.bias.fill_(float(b))
    return LinearFit(model, train_mae, test_mae, test_mape, len(train), n_test)
