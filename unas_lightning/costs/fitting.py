"""Cost models g(z) fitted to measured costs (paper Sec. 5), their held-out error, and the choice among them.

As in ProxylessNAS and the paper, N architectures are sampled uniformly before search, measured (timed,
for latency), and a model fitted to them; a held-out part of the samples gives the model's error (MAE
in the cost's unit, MAPE and the share of predictions within +-10%, in %). Three models:

* ``"linear"``: g(z) = sum_ij l_ij z_ij + b, the paper's additive per-choice costs, by ridge regression
  (``estimators.LinearControl``);
* ``"pairwise"``: the additive model plus one interaction per pair of consecutive rows, by ridge
  regression (``costs.PairwiseControl``);
* ``"mlp"``: one hidden layer on the rows, by Adam on the squared error (``costs.MLPControl``);
* ``"auto"``: the one of the three with the lowest k-fold cross-validated MAPE on the fitting part (the
  held-out part plays no role in the choice, so its error stays an honest estimate).

The model is only RELAX's control variate (its g): the search optimizes the measured cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import torch
from torch import Tensor, nn

from unas_lightning.costs.cost_models import MLPControl, PairwiseControl
from unas_lightning.distributions import Arch
from unas_lightning.estimators import LinearControl

CostModelKind = Literal["linear", "pairwise", "mlp", "auto"]
COST_MODELS = ("linear", "pairwise", "mlp")


def arch_features(archs: Sequence[Mapping[str, Tensor]], keys: Sequence[str]) -> Tensor:
    """[N, D] float64 matrix of the concatenated one-hot rows of each architecture, in ``keys`` order."""
    return torch.stack([torch.cat([a[k].detach().reshape(-1).double().cpu() for k in keys]) for a in archs])


@dataclass
class CostFit:
    """A fitted cost model, which kind it is, and its errors (train and held-out).

    ``cv_mape`` holds each kind's cross-validated MAPE when the kind was chosen (``"auto"``).
    """

    model: nn.Module
    train_mae: float
    test_mae: float
    test_mape: float  # percent
    n_train: int
    n_test: int
    kind: str = "linear"
    test_within10: float = float("nan")  # percent of held-out predictions within +-10% of the measured value
    cv_mape: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {
            "kind": self.kind,
            "train_mae": self.train_mae,
            "test_mae": self.test_mae,
            "test_mape": self.test_mape,
            "test_within10": self.test_within10,
            "n_train": self.n_train,
            "n_test": self.n_test,
        }
        out.update({f"cv_mape_{k}": v for k, v in self.cv_mape.items()})
        return out


LinearFit = CostFit  # the name of earlier releases


def ridge(x: Tensor, y: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Ridge regression with an unpenalised intercept: (weights [D], bias)."""
    x_mean, y_mean = x.mean(0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + alpha * torch.eye(x.shape[1], dtype=x.dtype)
    w = torch.linalg.solve(gram, xc.T @ yc)
    return w, y_mean - x_mean @ w


def stack(archs: Sequence[Arch]) -> dict[str, Tensor]:
    """N one-hot architectures as one batch of per-example rows [N, ...] (float32, CPU)."""
    return {k: torch.stack([a[k].detach().float().cpu() for a in archs]) for k in archs[0]}


def predict(model: nn.Module, archs: Sequence[Arch]) -> Tensor:
    """g at each architecture, [N] float64."""
    with torch.no_grad():
        return cast(Tensor, model(stack(archs))).double().reshape(-1)


def shapes_of(arch: Arch) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in arch.items()}


def fit_model(
    kind: str, archs: Sequence[Arch], y: Tensor, alpha: float, seed: int = 0, mlp_steps: int = 1000
) -> nn.Module:
    """One cost model of ``kind`` fitted to all of ``archs`` and their values ``y`` (no held-out part)."""
    shapes = shapes_of(archs[0])
    if kind == "linear":
        keys = list(shapes)
        w, b = ridge(arch_features(archs, keys), y, alpha)
        linear = LinearControl(shapes)
        with torch.no_grad():
            pos = 0
            for k in keys:
                n = archs[0][k].numel()
                linear.weight[k].copy_(w[pos : pos + n].reshape(shapes[k]).float())
                pos += n
            linear.bias.fill_(float(b))
        return linear
    if kind == "pairwise":
        pairwise = PairwiseControl(shapes)
        w, b = ridge(torch.stack([pairwise.features(a) for a in archs]), y, alpha)
        pairwise.load_coefficients(w, float(b))
        return pairwise
    if kind == "mlp":
        return fit_mlp(shapes, archs, y, alpha, seed, mlp_steps)
    raise ValueError(f"unknown cost model {kind!r}; choose one of {[*COST_MODELS, 'auto']}.")


def fit_mlp(
    shapes: Mapping[str, tuple[int, ...]], archs: Sequence[Arch], y: Tensor, alpha: float, seed: int, steps: int = 1000
) -> MLPControl:
    """An :class:`MLPControl` fitted by full-batch Adam on the standardized squared error, weight decay ``alpha``."""
    mlp = MLPControl(shapes)
    mlp.reset_parameters(torch.Generator().manual_seed(seed))
    mean, scale = y.mean(), y.std().clamp_min(1e-12) if len(y) > 1 else torch.ones((), dtype=y.dtype)
    x, target = stack(archs), ((y - mean) / scale).float()
    assert mlp.net is not None
    opt = torch.optim.Adam(mlp.net.parameters(), lr=1e-2, weight_decay=alpha)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = ((mlp(x) - target) ** 2).mean()
            loss.backward()
            opt.step()
    mlp.mean.fill_(float(mean))
    mlp.scale.fill_(float(scale))
    return mlp


def errors(pred: Tensor, y: Tensor) -> tuple[float, float, float]:
    """(MAE, MAPE %, share within +-10 % in %) of predictions against measured values."""
    rel = (pred - y).abs() / y.abs().clamp_min(1e-12)
    return (pred - y).abs().mean().item(), 100 * rel.mean().item(), 100 * (rel <= 0.1).double().mean().item()


def cross_validated_mape(
    kind: str, archs: Sequence[Arch], y: Tensor, alpha: float, folds: int, seed: int, mlp_steps: int = 1000
) -> float:
    """Mean held-out MAPE of ``kind`` over ``folds`` folds of ``archs``."""
    perm = torch.randperm(len(archs), generator=torch.Generator().manual_seed(seed + 1))
    chunks = [c for c in perm.chunk(folds) if len(c)]
    total, count = 0.0, 0
    for chunk in chunks:
        held = set(chunk.tolist())
        train = [i for i in range(len(archs)) if i not in held]
        model = fit_model(kind, [archs[i] for i in train], y[train], alpha, seed, mlp_steps)
        pred = predict(model, [archs[i] for i in chunk.tolist()])
        total += errors(pred, y[chunk])[1] * len(chunk)
        count += len(chunk)
    return total / count


def fit_cost_model(
    archs: Sequence[Arch],
    values: Sequence[float] | Tensor,
    kind: CostModelKind = "linear",
    holdout: float = 0.2,
    alpha: float = 1e-3,
    seed: int = 0,
    folds: int = 5,
    mlp_steps: int = 1000,
) -> CostFit:
    """Fit a cost model g to measured costs; report held-out MAE, MAPE and the share within +-10%.

    Args:
        archs: one-hot architectures (all with the same keys and shapes).
        values: their measured costs.
        kind: ``"linear"``, ``"pairwise"``, ``"mlp"`` or ``"auto"`` (see the module docstring).
        holdout: fraction kept out of the fit for the error report (0 fits on everything and reports
            the training error in the test fields).
        alpha: ridge penalty (linear, pairwise) or weight decay (mlp).
        seed: seed of the train/held-out split, the folds and the MLP's initial weights.
        folds: cross-validation folds of ``"auto"``.
        mlp_steps: Adam steps of the MLP's fit.

    Examples:
        >>> import torch
        >>> one_hot = torch.nn.functional.one_hot
        >>> archs = [{"ops": one_hot(torch.tensor([i % 2, i // 2 % 2]), 2).float()} for i in range(40)]
        >>> cost = [1.0 + 2.0 * (a["ops"][0, 1] * a["ops"][1, 1]).item() for a in archs]  # only both together cost
        >>> linear, pairwise = (fit_cost_model(archs, cost, kind=k, alpha=1e-6) for k in ("linear", "pairwise"))
        >>> round(linear.test_mape) > 10, round(pairwise.test_mape, 3), pairwise.test_within10
        (True, 0.0, 100.0)
    """
    if len(archs) < 2:
        raise ValueError(f"need at least 2 measured architectures to fit a cost model, got {len(archs)}.")
    if not 0 <= holdout < 1:
        raise ValueError(f"holdout must lie in [0, 1), got {holdout}.")
    if kind not in (*COST_MODELS, "auto"):
        raise ValueError(f"unknown cost model {kind!r}; choose one of {[*COST_MODELS, 'auto']}.")
    y = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if y.shape[0] != len(archs):
        raise ValueError(f"{len(archs)} architectures but {y.shape[0]} values.")
    n_test = round(holdout * len(archs))
    perm = torch.randperm(len(archs), generator=torch.Generator().manual_seed(seed))
    test, train = perm[:n_test].tolist(), perm[n_test:].tolist()
    train_archs = [archs[i] for i in train]
    cv: dict[str, float] = {}
    chosen = str(kind)
    if kind == "auto":
        folds = min(folds, len(train))
        cv = {k: cross_validated_mape(k, train_archs, y[train], alpha, folds, seed, mlp_steps) for k in COST_MODELS}
        chosen = min(cv, key=cv.__getitem__)
    model = fit_model(chosen, train_archs, y[train], alpha, seed, mlp_steps)
    pred = predict(model, archs)
    train_mae = errors(pred[train], y[train])[0]
    test_mae, test_mape, within = errors(pred[test], y[test]) if n_test else errors(pred, y)
    return CostFit(model, train_mae, test_mae, test_mape, len(train), n_test, chosen, within, cv)


def fit_linear_model(
    archs: Sequence[Arch],
    values: Sequence[float] | Tensor,
    holdout: float = 0.2,
    alpha: float = 1e-3,
    seed: int = 0,
) -> CostFit:
    """Fit the paper's additive model g(z) = sum l_ij z_ij + b: ``fit_cost_model(kind="linear")``.

    Examples:
        >>> import torch
        >>> archs = [{"op": torch.nn.functional.one_hot(torch.tensor(i % 3), 3).float()} for i in range(30)]
        >>> fit = fit_linear_model(archs, [1.0 + (i % 3) for i in range(30)], alpha=1e-6)
        >>> round(float(fit.model({"op": torch.tensor([0.0, 0.0, 1.0])})), 3)
        3.0
    """
    return fit_cost_model(archs, values, "linear", holdout, alpha, seed)
