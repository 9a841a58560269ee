"""Device-free sizes of a network: parameters and multiply-adds (what papers report beside accuracy)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: Submodules by this name are training aids (DARTS's auxiliary head) and are not counted by default.
AUXILIARY = "auxiliary"


def count_parameters(network: nn.Module, include_auxiliary: bool = False) -> int:
    """Parameters of a network; by default without an ``auxiliary`` head (as DARTS and UNAS report).

    Examples:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(
        p.numel() for n, p in network.named_parameters() if include_auxiliary or not n.startswith(f"{AUXILIARY}.")
    )


def multiply_adds(network: nn.Module, example_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass of one example (FLOPs / 2 of convolutions and matrix products).

    Counted by ``torch.utils.flop_counter`` in eval mode without gradients, on the network's device.

    Examples:
        >>> multiply_adds(nn.Conv2d(1, 4, 3, padding=1, bias=False), (1, 8, 8))
        2304
    """
    was_training = network.training
    network.eval()
    param = next(network.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(torch.zeros(1, *example_shape, device=device))
    finally:
        network.train(was_training)
    return counter.get_total_flops() // 2
