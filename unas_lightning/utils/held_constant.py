"""``held_constant(params)``: use parameters as constants inside a block (the phi-step's w)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import Tensor


@contextmanager
def held_constant(params: Iterable[Tensor]) -> Iterator[None]:
    """Within this block ``params`` do not require gradients: computations use them as constants.

    Cheaper than ``torch.func.functional_call`` with detached copies (which re-binds every
    parameter of a module tree of thousands of modules on each call) and equivalent for autograd.
    Parameters that already do not require gradients are left alone (and stay so afterwards).

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> with held_constant([w]):
        ...     y = (w * 3).sum()
        >>> y.requires_grad, w.requires_grad
        (False, True)
    """
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
