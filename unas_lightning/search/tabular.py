"""Searches on a benchmark's table (NAS-Bench-201): phi only, the loss of a cell looked up, no supernet.

A tabular search answers "does this estimator *search* well?" apart from weight sharing: the loss of a
sampled cell is its error after full training (one training seed's, drawn at random: a noisy reward),
so the architecture found is judged by its true (seed-averaged) accuracy in seconds. Every black-box
estimator (``Reinforce``, ``Relax``, ``IndeCateR``, a ``BlackBox`` of one's own) works unchanged; a
budget counts table queries, as the benchmark's papers do.

* :func:`search_table`: the loop, for scripts and ``benchmarks/nb201.py``;
* :func:`random_search`: the baseline at the same budget;
* :class:`TabularSearch`: the same loop as a ``LightningModule``, so ``unas-cli fit --config
  configs/search/nb201_tabular.yaml`` runs it with a config, logs and a ``genotype.json``.

Examples:
    >>> from unas_lightning.estimators import Reinforce
    >>> from unas_lightning.spaces.nb201.table import NB201Table
    >>> result = search_table(NB201Table("cifar10"), Reinforce(num_samples=4), queries=300, seed=0)
    >>> sorted(result)[:3], result[300].queries
    ([300], 300)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from unas_lightning.analysis.fmnist201 import FMNIST201Table
from unas_lightning.callbacks.genotype_writer import GenotypeWriter
from unas_lightning.estimators import BlackBox, Estimator, EstimatorOutput, Reinforce
from unas_lightning.spaces.nb201.genotype import EDGES, NB201Genotype
from unas_lightning.spaces.nb201.ops import NB201_OPS
from unas_lightning.spaces.nb201.table import NB201Table, TableObjective, cell_of_index
from unas_lightning.utils.files import run_dir

KEY = "cell"
FMNIST201 = "fmnist201"
Table = NB201Table | FMNIST201Table


def open_table(dataset: str, path: str | None = None) -> Table:
    """``fmnist201`` (the FMNIST-201 table: ``path`` or the one shipped), else the NAS-Bench-201 table of
    ``dataset`` (``cifar10``, ``cifar100``, ``imagenet16-120``)."""
    if dataset == FMNIST201:
        return FMNIST201Table(path)
    return NB201Table(dataset, path)


@dataclass
class TableSearchPoint:
    """Where a table search stands after ``queries`` queries: its most probable cell and that cell's truth."""

    queries: int
    genotype: NB201Genotype
    accuracy: float  # the table's seed-averaged accuracy (%)
    latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        """The point as JSON-ready values (the cell as the benchmark's string)."""
        return {
            "queries": self.queries,
            "arch": self.genotype.to_arch_str(),
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
        }


def new_logits() -> dict[str, nn.Parameter]:
    """Uniform phi for the NAS-Bench-201 cell: ``{"cell": [6, 5] zeros}``."""
    return {KEY: nn.Parameter(torch.zeros(len(EDGES), len(NB201_OPS)))}


def most_probable(logits: Mapping[str, torch.Tensor]) -> NB201Genotype:
    """The cell of the largest logit on every edge."""
    return NB201Genotype.from_rows(logits[KEY])


def check_black_box(estimator: Estimator) -> None:
    """``ValueError`` unless ``estimator`` is a black box (a table has values at one-hot cells only)."""
    if not isinstance(estimator, BlackBox):
        raise ValueError(
            f"{type(estimator).__name__} differentiates the loss, but a table has values only at one-hot cells: "
            "use a black-box estimator (Reinforce, Relax, IndeCateR)."
        )


def phi_step(
    estimator: Estimator,
    logits: Mapping[str, Tensor],
    objective: TableObjective,
    opt: torch.optim.Optimizer | LightningOptimizer,
    backward: Callable[[Tensor], Any] = torch.Tensor.backward,
) -> tuple[EstimatorOutput, int]:
    """One phi-step on the table (the estimate, its backward, the optimizer step) and the queries it spent."""
    before = objective.queries
    opt.zero_grad()
    out = estimator.surrogate(logits, objective)
    backward(out.loss)
    opt.step()
    return out, objective.queries - before


def within_budget(spent: int, per_step: int | None, budget: int) -> bool:
    """Whether one more step fits the budget (the first step always runs: its cost is not known before)."""
    return per_step is None or spent + per_step <= budget


def search_table(
    table: Table,
    estimator: Estimator,
    queries: int | Sequence[int] = 300,
    seed: int = 0,
    lr: float = 0.1,
    noisy: bool = True,
    max_latency_ms: float | None = None,
    latency_weight: float = 1.0,
) -> dict[int, TableSearchPoint]:
    """Optimize phi with ``estimator`` on the table until each budget in ``queries`` is spent.

    Args:
        table: the data set's table.
        estimator: a black-box estimator (its learned state is reset by building a new one per run).
        queries: a budget, or several (the search runs to the largest and records each on the way).
        seed: seeds the estimator's samples and the drawn training seeds.
        lr: Adam's learning rate for phi.
        noisy: one training seed's accuracy per query (else the seed average).
        max_latency_ms, latency_weight: a hinge on the table's latency (``TableObjective``).

    Returns:
        per budget, the most probable cell when the budget was reached (a step that would cross a
        budget is not taken: a budget is never exceeded).
    """
    check_black_box(estimator)
    budgets = sorted({int(q) for q in ([queries] if isinstance(queries, int) else queries)})
    generator = torch.Generator().manual_seed(seed)
    objective = TableObjective(
        table, noisy=noisy, generator=generator, max_latency_ms=max_latency_ms, latency_weight=latency_weight
    )
    torch.manual_seed(seed)  # before prepare(): an estimator's initial state (RELAX's g) is part of the run
    logits = new_logits()
    estimator.prepare(dict(logits))
    opt = torch.optim.Adam(logits.values(), lr=lr)
    out: dict[int, TableSearchPoint] = {}
    per_step = None
    for budget in budgets:
        while within_budget(objective.queries, per_step, budget):
            _, per_step = phi_step(estimator, logits, objective, opt)
        g = most_probable(logits)
        out[budget] = TableSearchPoint(budget, g, table.accuracy(g), table.latency_ms(g))
    return out


def random_search(
    table: Table, queries: int, seed: int = 0, noisy: bool = True, max_latency_ms: float | None = None
) -> TableSearchPoint:
    """Query ``queries`` cells drawn uniformly (within the latency budget, when one is given) and keep the
    one with the best observed accuracy: the baseline every table search is compared with."""
    generator = torch.Generator().manual_seed(seed)
    pool = torch.arange(len(table.mean_accuracies))
    if max_latency_ms is not None:
        pool = pool[table.latencies_ms <= max_latency_ms]
    picks = pool[torch.randint(len(pool), (queries,), generator=generator)]
    observed = table.draw_accuracies(picks, generator) if noisy else table.mean_accuracies[picks]
    g = cell_of_index(int(picks[int(observed.argmax())]))
    return TableSearchPoint(queries, g, table.accuracy(g), table.latency_ms(g))


class _Steps(torch.utils.data.Dataset):
    """As many items as steps may be taken: the search stops itself when its query budget is spent."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class TabularSearch(L.LightningModule):
    """A search on the NAS-Bench-201 table as a ``LightningModule``: one phi-step per training step.

    Each step calls the estimator on the table objective (``TableObjective``) and steps phi; the run
    ends when ``queries`` table queries are spent (one epoch). Logs ``table/accuracy`` (the most
    probable cell's true accuracy), ``table/regret`` (to the table's optimum), ``table/queries`` and
    ``table/loss``; the ``GenotypeWriter`` it brings writes ``genotype.json`` (the cell, with the
    benchmark's string). No data module is needed.

    On FMNIST-201 (``dataset: fmnist201``) a queried cell outside the table is trained with the table's
    protocol and kept in the run's folder (``fmnist201_on_demand.json``, reused by a resumed run), and
    ``table/accuracy`` is logged only for a most probable cell the table holds; the last one is trained if
    needed, so the run ends with its true accuracy.

    Args:
        dataset: the table (``cifar10``, ``cifar100``, ``imagenet16-120``, or ``fmnist201``).
        table_path: another table file of the same kind (an FMNIST-201 table of another protocol, say).
        estimator: a black-box estimator (default ``Reinforce(num_samples=4)``: RLOO).
        queries: the budget of table queries.
        noisy: each query returns one training seed's accuracy, drawn at random (else their mean).
        phi_optimizer: optimizer factory for phi (default Adam, lr 0.1).
        max_latency_ms: a latency budget from the table (a hinge penalty above it); None: none.
        latency_weight: the hinge's weight.
    """

    def __init__(
        self,
        dataset: str = "cifar10",
        table_path: str | None = None,
        estimator: Estimator | None = None,
        queries: int = 300,
        noisy: bool = True,
        phi_optimizer: OptimizerCallable | None = None,
        max_latency_ms: float | None = None,
        latency_weight: float = 1.0,
    ):
        super().__init__()
        if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
            raise ValueError(f"queries must be a positive integer, got {queries!r}.")
        self.estimator = estimator if estimator is not None else Reinforce(num_samples=4)
        check_black_box(self.estimator)
        self.table = open_table(dataset, table_path)
        self.arch = nn.ParameterDict(new_logits())
        self.estimator.prepare(dict(self.arch))
        self.queries, self.phi_optimizer = queries, phi_optimizer
        self.objective = TableObjective(
            self.table, noisy=noisy, max_latency_ms=max_latency_ms, latency_weight=latency_weight
        )
        self.optimum = self.table.best(max_latency_ms)[1]
        self.automatic_optimization = False
        self._per_step: int | None = None

    def genotype(self) -> NB201Genotype:
        """The most probable cell."""
        return most_probable(dict(self.arch))

    @override
    def train_dataloader(self) -> torch.utils.data.DataLoader[int]:
        return torch.utils.data.DataLoader(_Steps(self.queries), batch_size=None)

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        factory = self.phi_optimizer or (lambda params: torch.optim.Adam(params, lr=0.1))
        return factory(self.arch.parameters())

    @override
    def configure_callbacks(self) -> list[L.Callback]:
        """A ``GenotypeWriter``, unless the trainer has one already."""
        if any(isinstance(c, GenotypeWriter) for c in self.trainer.callbacks):  # type: ignore[attr-defined]
            return []
        return [GenotypeWriter()]

    @override
    def setup(self, stage: str) -> None:
        if isinstance(self.table, FMNIST201Table):
            self.table.use_cache_dir(run_dir(self.trainer))  # cells trained on demand stay with the run

    @override
    def on_train_start(self) -> None:
        seed = torch.initial_seed() % (2**63)
        self.objective.generator = torch.Generator().manual_seed(seed)

    @override
    def on_train_batch_start(self, batch: int, batch_idx: int) -> int | None:
        if not within_budget(self.objective.queries, self._per_step, self.queries):
            return -1  # the budget is spent: end the epoch (and the run)
        return None

    @override
    def training_step(self, batch: int, batch_idx: int) -> None:
        opt = cast(LightningOptimizer, self.optimizers())  # the one optimizer of phi
        out, self._per_step = phi_step(self.estimator, dict(self.arch), self.objective, opt, self.manual_backward)
        logs: dict[str, Tensor | float] = {
            "table/loss": out.value.float().mean(),
            "table/queries": float(self.objective.queries),
        }
        g = self.genotype()
        if g in self.table:  # FMNIST-201 trains a missing cell only when it is queried or the result
            accuracy = self.table.accuracy(g)
            logs.update({"table/accuracy": accuracy, "table/regret": self.optimum - accuracy})
        self.log_dict(logs, prog_bar=True)

    @override
    def on_fit_end(self) -> None:
        g = self.genotype()
        acc = self.table.accuracy(g)
        rank_zero_info(
            f"{self.objective.queries} queries: {g.to_arch_str()} "
            f"accuracy {acc:.2f}% (optimum {self.optimum:.2f}%, regret {self.optimum - acc:.2f})"
        )
