"""DeIsomorphicSample: warm-up w-steps that train every distinct NAS-Bench-201 cell equally often.

Many of the 15,625 NAS-Bench-201 genotypes compute the same function: an edge whose input or output is
cut off by ``none`` edges does nothing, so its 5 choices give 5 genotypes of one cell (one isomorphism
class, ``NB201Genotype.unique_key``). Drawing z uniformly over genotypes therefore trains a cell in
proportion to its class size, 1 to 275: the sparse, mostly-``none`` cells are trained hundreds of times
more often than the dense convolutional cells a search should end on, one reason a one-shot supernet
underrates large architectures. Ning et al. (2021, "Evaluating Efficient Performance Estimators of
Neural Architectures") train with *de-isomorphic sampling* instead: every connected class equally often.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping

import torch
from torch import Tensor

from unas_lightning.distributions import Arch, ArchDistribution, expand_rows
from unas_lightning.search.w_step import WStepArch
from unas_lightning.spaces.nb201.genotype import EDGES, NB201Genotype
from unas_lightning.spaces.nb201.ops import NB201_OPS
from unas_lightning.spaces.nb201.table import cell_index


@functools.cache
def acceptance() -> Tensor:
    """Per genotype, in table-key order (``NB201Genotype.all``; indexed by ``cell_index``), 1 / the size of its
    isomorphism class; 0 for a cell with no path from input to output (it computes zeros and trains nothing)."""
    keys = [g.unique_key() if g.connected() else None for g in NB201Genotype.all()]
    sizes = Counter(keys)
    return torch.tensor([0.0 if key is None else 1.0 / sizes[key] for key in keys])


class DeIsomorphicSample(WStepArch):
    """A one-hot z drawn from p_phi with each isomorphism class's genotypes down-weighted by its size.

    Rejection sampling: z ~ p_phi, kept with probability 1 / |class of z| (never for a disconnected cell),
    so under a uniform phi (the warm-up) every connected cell of the space is trained equally often, and
    every genotype of a class equally often within it; under another phi, each class keeps its mean
    genotype's probability. About 2.4 draws per kept architecture under a uniform phi (6,461 classes of
    15,625 genotypes). For the ``NB201Space`` only (logits ``"cell"`` of shape [6, 5]):
    ``SearchModule(warmup_w_step_arch="deisomorphic")``.

    Examples:
        >>> import torch
        >>> sample = DeIsomorphicSample()
        >>> z = sample({"cell": torch.zeros(6, 5)})
        >>> z["cell"].shape, NB201Genotype.from_rows(z["cell"]).connected()
        (torch.Size([6, 5]), True)
    """

    def __call__(self, logits: Mapping[str, Tensor], examples: int | None = None) -> Arch:
        if set(logits) != {"cell"} or tuple(logits["cell"].shape) != (len(EDGES), len(NB201_OPS)):
            shapes = {k: tuple(v.shape) for k, v in logits.items()}
            raise ValueError(
                f"DeIsomorphicSample is for the NAS-Bench-201 space (logits 'cell' of shape [6, 5]), got {shapes}."
            )
        rows = logits["cell"] if examples is None else expand_rows(logits, examples)["cell"]
        with torch.no_grad():
            keep = acceptance().to(rows.device)
            z = torch.zeros_like(rows)
            todo = torch.ones(rows.shape[:-2], dtype=torch.bool, device=rows.device)
            while bool(todo.any()):
                draw = ArchDistribution({"cell": rows}).sample()["cell"]
                index = cell_index(draw)
                accepted = todo & (torch.rand(index.shape, device=rows.device) < keep[index])
                z = torch.where(accepted[..., None, None], draw, z)
                todo &= ~accepted
            return {"cell": z}
