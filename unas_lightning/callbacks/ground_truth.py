"""The searched cell judged by a ground-truth table, at the end of the search."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from unas_lightning.callbacks.architecture_monitor import SUMMARY_FILE
from unas_lightning.callbacks.ranking_monitor import TRUTHS
from unas_lightning.spaces.genotype import Genotype
from unas_lightning.utils.files import run_dir, write_json_atomic

if TYPE_CHECKING:
    from unas_lightning.search.module import SearchModule
    from unas_lightning.search.tabular import Table
    from unas_lightning.spaces.nb201.genotype import NB201Genotype

GROUND_TRUTH_FILE = "ground_truth.json"


class GroundTruthReport(L.Callback):
    """Looks the searched cell up in a ground-truth table when the search ends, and says where it ranks.

    A search in the NAS-Bench-201 space can be judged at once: the FMNIST-201 table (Fashion-MNIST, the
    default data set) or a NAS-Bench-201 table (CIFAR-10, CIFAR-100, ImageNet16-120) gives the accuracy
    that the derived cell reaches when trained alone. At the end of ``fit`` (rank 0 only) this callback
    reports, for the derived genotype:

    * ``accuracy``: the table's seed-averaged accuracy (%) of the cell trained alone, ``measure`` says
      which: the test accuracy for FMNIST-201 (its validation accuracy is ``val_accuracy``), the
      validation accuracy for a NAS-Bench-201 table (the one it records for every seed);
    * ``percentile``: the share of the table's cells (connected ones, one per isomorphism class) whose
      accuracy is below the found cell's (100: the best cell of the table);
    * ``regret``: the table's best accuracy minus the found cell's (points);
    * ``random_median``: the median accuracy of the table's uniformly drawn cells, what a random
      architecture gives.

    A cell outside the FMNIST-201 sample is trained on demand with the table's protocol (about a minute
    per seed on a 2-core CPU; ``train_missing=False`` reports it as missing instead) and cached in the
    run folder. The figures are written to ``ground_truth.json``, added to ``summary.json`` under
    ``ground_truth`` (when the ``ArchitectureMonitor`` wrote one) and printed.

    Args:
        truth: ``"fmnist201"``, ``"cifar10"``, ``"cifar100"`` or ``"imagenet16-120"``.
        train_missing: train a cell the FMNIST-201 table does not hold (else report it as missing).
        table_path: the table file (default: the FMNIST-201 table shipped with the package, or the
            NAS-Bench-201 table of ``truth``), e.g. one built with ``benchmarks/fmnist201.py build --out``.

    Examples:
        >>> GroundTruthReport("fmnist201").truth
        'fmnist201'
    """

    def __init__(self, truth: str = "fmnist201", train_missing: bool = True, table_path: str | None = None):
        super().__init__()
        if truth not in TRUTHS:
            raise ValueError(f"GroundTruthReport: truth must be one of {TRUTHS}, got {truth!r}.")
        self.truth, self.train_missing, self.table_path = truth, train_missing, table_path
        self.folder: Path | None = None
        self.report: dict[str, Any] | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Resolve the run folder once, on every rank (a collective under DDP: never in the later hooks)."""
        self.folder = run_dir(trainer)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        genotype = cast("SearchModule", pl_module).genotype()
        if genotype is None:  # no phi-step ran: nothing was searched
            return
        folder = cast(Path, self.folder)
        self.report = self.judge(genotype, folder)
        write_json_atomic(folder / GROUND_TRUTH_FILE, self.report)
        summary = folder / SUMMARY_FILE
        if summary.is_file():
            write_json_atomic(summary, {**json.loads(summary.read_text()), "ground_truth": self.report})
        rank_zero_info(describe(self.report))

    def judge(self, genotype: Genotype, folder: Path | None = None) -> dict[str, Any]:
        """The figures for ``genotype`` (a NAS-Bench-201 cell), cells trained on demand kept in ``folder``."""
        if genotype.space_name != "nb201":  # by name: no dispatch on a space's classes outside its package
            raise ValueError(
                f"GroundTruthReport judges NAS-Bench-201 cells, got a {genotype.space_name!r}-space genotype: "
                "use it with unas_lightning.spaces.NB201Space (e.g. configs/search/nb201_fmnist.yaml)."
            )
        cell = cast("NB201Genotype", genotype)
        table = self._table(folder)
        report: dict[str, Any] = {"truth": self.truth, "arch": cell.to_arch_str(), "measure": _measure(table)}
        try:
            found, val = _accuracy(table, cell), table.accuracy(cell)
        except KeyError:  # not in the FMNIST-201 sample and train_missing=False
            return {**report, "missing": True}
        cells = _reference_cells(table)
        accuracies = [_accuracy(table, g) for g, _ in cells]
        uniform = [a for a, (_, source) in zip(accuracies, cells, strict=True) if source == "uniform"]
        return {
            **report,
            "accuracy": found,
            "val_accuracy": val,
            "percentile": 100.0 * sum(a < found for a in accuracies) / len(accuracies),
            "regret": max(accuracies) - found,
            "table_best": max(accuracies),
            "random_median": statistics.median(uniform or accuracies),
            "table_cells": len(accuracies),
        }

    def _table(self, folder: Path | None) -> Table:
        from unas_lightning.analysis.fmnist201 import FMNIST201Table
        from unas_lightning.search.tabular import FMNIST201
        from unas_lightning.spaces.nb201.table import NB201Table

        if self.truth == FMNIST201:
            return FMNIST201Table(self.table_path, cache_dir=folder, train_missing=self.train_missing)
        return NB201Table(self.truth, self.table_path)


def _measure(table: Table) -> str:
    from unas_lightning.analysis.fmnist201 import FMNIST201Table

    return "test" if isinstance(table, FMNIST201Table) else "validation"


def _accuracy(table: Table, genotype: NB201Genotype) -> float:
    """The table's seed-averaged test accuracy (FMNIST-201), or validation accuracy (NAS-Bench-201)."""
    from unas_lightning.analysis.fmnist201 import FMNIST201Table

    if isinstance(table, FMNIST201Table):
        return table.test_accuracy(genotype)
    return table.accuracy(genotype)


def _reference_cells(table: Table) -> list[tuple[NB201Genotype, str]]:
    """The cells the found one is ranked among, with how each was drawn: the FMNIST-201 sample (its
    uniform draws and the CIFAR-10 best), or every connected class of a NAS-Bench-201 table."""
    from unas_lightning.analysis.fmnist201 import FMNIST201Table
    from unas_lightning.spaces.nb201.genotype import NB201Genotype

    if isinstance(table, FMNIST201Table):
        shipped = [table.records[k] for k in sorted(table.shipped)]
        cells = [(NB201Genotype.from_arch_str(r["arch"]), r.get("source", "uniform")) for r in shipped]
        return [(g, source) for g, source in cells if g.connected()]
    return [(g, "uniform") for g in NB201Genotype.unique() if g.connected()]


def describe(report: dict[str, Any]) -> str:
    """The report as the lines the search prints last."""
    head = f"ground truth ({report['truth']}) of the found cell {report['arch']}:"
    if report.get("missing"):
        return f"{head}\n  not in the table (train_missing=False)"
    return "\n".join(
        [
            head,
            f"  {report['measure'] + ' accuracy:':<16} {report['accuracy']:.2f}% trained alone",
            f"  percentile:      {report['percentile']:.1f} of {report['table_cells']} cells "
            f"(best {report['table_best']:.2f}%, regret {report['regret']:.2f} points)",
            f"  random cell:     {report['random_median']:.2f}% (the median of the table's uniformly drawn cells)",
        ]
    )
