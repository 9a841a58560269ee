"""Exact gradients by enumeration, and Monte-Carlo moments of an estimator (for tests and benchmarks).

For small factorial categoricals the expectation E_{p_phi(z)}[L(z)] = sum_z p_phi(z) L(z) can be
summed over every architecture, which gives the exact gradient that unbiased estimators must match.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import cast

import torch
from torch import Tensor

from unas_lightning.distributions import Arch
from unas_lightning.estimators.base import Estimator, LossFn


def _rows(logits: Mapping[str, Tensor]) -> list[tuple[str, tuple[int, ...], int]]:
    return [(k, idx, v.shape[-1]) for k, v in logits.items() for idx in itertools.product(*map(range, v.shape[:-1]))]


def enumerate_architectures(logits: Mapping[str, Tensor], limit: int = 1_000_000) -> Iterator[Arch]:
    """Every one-hot architecture of the distribution with these logits' shapes."""
    rows = _rows(logits)
    total = 1
    for _, _, k in rows:
        total *= k
    if total > limit:
        raise ValueError(f"{total} architectures exceed the enumeration limit {limit}; use a smaller problem.")
    for choice in itertools.product(*(range(k) for _, _, k in rows)):
        arch = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in logits.items()}
        for (key, idx, _), c in zip(rows, choice, strict=True):
            arch[key][(*idx, c)] = 1.0
        yield arch


def expected_loss(logits: Mapping[str, Tensor], loss_fn: LossFn) -> Tensor:
    """sum_z p_phi(z) L(z), differentiable in the logits."""
    log_probs = {k: torch.log_softmax(v, -1) for k, v in logits.items()}
    total: Tensor | float = 0.0
    for arch in enumerate_architectures(logits):
        log_p = cast(Tensor, sum((log_probs[k] * arch[k]).sum() for k in arch))
        total = total + log_p.exp() * loss_fn(arch)
    return cast(Tensor, total)  # a tensor: there is at least one architecture


def exact_gradient(logits: Mapping[str, Tensor], loss_fn: LossFn) -> Tensor:
    """d/dphi E_{p_phi(z)}[L(z)], flattened in the order of ``logits``."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in logits.items()}
    grads = torch.autograd.grad(expected_loss(leaves, loss_fn), list(leaves.values()))
    return torch.cat([g.reshape(-1) for g in grads])


def sample_gradients(estimator: Estimator, logits: Mapping[str, Tensor], loss_fn: LossFn, n: int) -> Tensor:
    """``n`` single-sample estimates [n, num_params] at fixed logits (the estimator may adapt its state)."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in logits.items()}
    out = []
    for _ in range(n):
        for v in leaves.values():
            v.grad = None
        estimator.surrogate(leaves, loss_fn).loss.backward()
        out.append(torch.cat([cast(Tensor, v.grad).reshape(-1) for v in leaves.values()]))  # set by backward
    return torch.stack(out)


def z_scores(samples: Tensor, exact: Tensor) -> Tensor:
    """(mean estimate - exact) / standard error, per parameter."""
    se = samples.std(0) / samples.shape[0] ** 0.5
    return (samples.mean(0) - exact) / se
