"""The leave-one-out baseline of k samples (RLOO; the k > 1 baselines of REBAR and RELAX)."""

from __future__ import annotations

from torch import Tensor


def leave_one_out(values: Tensor) -> Tensor:
    """For k samples ``values`` [k, ...], the mean of the other k - 1 samples at each one (zeros for k = 1).

    Sample i's baseline does not depend on sample i, so subtracting it from sample i's score-function
    term keeps the average of the k terms unbiased (Kool et al. 2019). Gradients flow through it.

    Examples:
        >>> import torch
        >>> leave_one_out(torch.tensor([1.0, 2.0, 6.0])).tolist()
        [4.0, 3.5, 1.5]
    """
    k = values.shape[0]
    if k == 1:
        return values * 0
    return (values.sum(0, keepdim=True) - values) / (k - 1)
