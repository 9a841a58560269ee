"""A hardware cost of one's own, in a user's module, summed into a search next to measured latency.

Nothing inside ``unas_lightning`` changes: a cost is one ``Meter`` class, chosen by ``class_path``::

    PYTHONPATH=examples unas-cli fit --config configs/search/proxyless_latency_quick.yaml \
        --config examples/custom_cost.yaml

``ActivationMemory`` measures the memory the activations of one forward pass occupy: the bytes of every
tensor a leaf module returns, for a batch of ``batch_size`` examples. It is deterministic (a forward pass
with hooks that count sizes, nothing is timed), and it is what limits the batch size of inference on
small devices more often than the parameter count does: a network with few parameters but wide,
high-resolution feature maps can be the costlier one.
"""

from __future__ import annotations

import torch

from unas_lightning.costs import Candidate, Meter


class ActivationMemory(Meter):
    """Megabytes of activations of one forward pass (sum over every leaf module's outputs).

    Args:
        batch_size: examples in the measured forward pass.
    """

    name, unit = "activations", "MB"

    def __init__(self, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = batch_size

    def measure(self, candidate: Candidate) -> float:
        network = candidate.network
        device = next(network.parameters()).device
        total = 0

        def count(module, inputs, output):
            nonlocal total
            outputs = output if isinstance(output, (tuple, list)) else [output]
            total += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, torch.Tensor))

        leaves = [m for m in network.modules() if not list(m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        was_training = network.training
        try:
            with torch.no_grad():
                network.eval()(torch.zeros(self.batch_size, *candidate.example_shape, device=device))
        finally:
            network.train(was_training)
            for h in handles:
                h.remove()
        return total / 2**20
