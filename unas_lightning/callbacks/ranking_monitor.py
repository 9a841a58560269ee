"""RankingMonitor: does the supernet rank architectures, measured during the user's own search."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from unas_lightning.analysis.ranking import kendall_tau, ranking_report, supernet_accuracy, with_count_report
from unas_lightning.distributions import ArchDistribution
from unas_lightning.spaces.genotype import Genotype
from unas_lightning.utils.files import run_dir, write_json_atomic

if TYPE_CHECKING:
    from unas_lightning.search.module import SearchModule

RANKING_FILE = "ranking.json"
TRUTHS = ("fmnist201", "cifar10", "cifar100", "imagenet16-120")


class RankingMonitor(L.Callback):
    """Evaluates a fixed set of architectures with the shared weights and logs how well they are ranked.

    A weight-sharing search can only be as good as the supernet's ranking of architectures. At the end
    of the warm-up (the w-only epochs of ``SearchModule``) and, with ``every_n_epochs``, every that many
    epochs, this callback computes the supernet's one-hot accuracy (``analysis.ranking.supernet_accuracy``)
    at each of ``cells`` architectures, on the same first ``batches`` batches of the search-val loader
    every time (with ``recalibrate_batches``, each architecture's batch norms first re-estimate their
    statistics on the next that many search-val batches, as single-path one-shot NAS does), and logs to
    every logger:

    * with a ground truth (``truth``: ``"fmnist201"``, the FMNIST-201 table of Fashion-MNIST, or a
      NAS-Bench-201 table, ``"cifar10"``, ``"cifar100"``, ``"imagenet16-120"``; NAS-Bench-201 space
      only): ``ranking/kendall_tau``, ``ranking/spearman_rho``, ``ranking/kendall_tau_top20`` (over the
      truly best 20%) and ``ranking/top_k_overlap`` (of the supernet's ``top_k`` best, how many are in
      the truly best 10%); the architectures are connected cells drawn from the table; the same figures
      with a ``_with_count`` suffix rank by the supernet's accuracy and the table's parameter count
      combined (``analysis.ranking.with_count_report``), a ranker that beat both of its parts on
      FMNIST-201; ``params`` holds those counts (M) once the architectures are drawn;
    * always: ``ranking/mean_accuracy``, ``ranking/accuracy_spread`` (the standard deviation of the
      supernet accuracies: a supernet that cannot tell architectures apart shows a small one) and, from
      the second evaluation on, ``ranking/stability`` (the Kendall tau between this evaluation and the
      previous one); without a truth the architectures are drawn uniformly from the space.

    Every evaluation is also appended to ``ranking.json`` in the run folder (the architectures, their
    supernet and true accuracies, the figures). It runs on rank 0 only, with no collective (the other
    ranks wait at their next step), and logs through the loggers directly, never ``self.log``: a metric
    reduction on one rank only would hang DDP.

    Args:
        truth: the ground-truth table, or None.
        cells: architectures evaluated (fewer if the table holds fewer).
        batches: search-val batches per architecture.
        every_n_epochs: also evaluate after every this many epochs (0: only at the end of the warm-up,
            or after the first epoch when there is none).
        at_epochs: also evaluate after each of these epochs (counted from 1), e.g. ``[2, 8, 32]`` for a
            learning curve at a few budgets.
        top_k: the supernet's best architectures whose true rank ``ranking/top_k_overlap`` checks.
        seed: draws the architectures (the same set in every run with the same seed).
        recalibrate_batches: search-val batches (after the ``batches`` evaluated) on which each
            architecture's batch-norm statistics are re-estimated before its evaluation
            (``analysis.ranking.running_statistics``); 0: each evaluation batch's own statistics.

    Examples:
        >>> RankingMonitor(truth="fmnist201", cells=50).truth
        'fmnist201'
    """

    def __init__(
        self,
        truth: str | None = None,
        cells: int = 50,
        batches: int = 4,
        every_n_epochs: int = 0,
        top_k: int = 10,
        seed: int = 0,
        at_epochs: Sequence[int] = (),
        recalibrate_batches: int = 0,
    ):
        super().__init__()
        if truth is not None and truth not in TRUTHS:
            raise ValueError(f"RankingMonitor: truth must be one of {TRUTHS} or None, got {truth!r}.")
        checks = [("cells", cells, 2), ("batches", batches, 1), ("every_n_epochs", every_n_epochs, 0),
                  ("recalibrate_batches", recalibrate_batches, 0)]  # fmt: skip
        for name, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"RankingMonitor: {name} must be an integer >= {low}, got {value!r}.")
        self.truth, self.cells, self.batches, self.recalibrate_batches = truth, cells, batches, recalibrate_batches
        if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in at_epochs):
            raise ValueError(f"RankingMonitor: at_epochs must hold integers >= 1, got {list(at_epochs)!r}.")
        self.every_n_epochs, self.top_k, self.seed = every_n_epochs, top_k, seed
        self.at_epochs = sorted(set(at_epochs))
        self.folder: Path | None = None
        self.history: list[dict[str, Any]] = []
        self._genotypes: list[Genotype] | None = None
        self._truths: list[float] | None = None
        self.params: list[float] | None = None  # with a truth: the table's parameter count (M) of each architecture
        self._data: list[tuple[Tensor, Tensor]] | None = None
        self._calibration: list[tuple[Tensor, Tensor]] | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Resolve the run folder once, on every rank (a collective under DDP: never in the later hooks)."""
        self.folder = run_dir(trainer)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = cast("SearchModule", pl_module)
        epoch = trainer.current_epoch + 1  # epochs done
        due = (
            epoch == max(1, module.warmup_epochs)
            or (self.every_n_epochs and epoch % self.every_n_epochs == 0)
            or epoch in self.at_epochs
        )
        if not trainer.is_global_zero or not due:
            return
        record = self.evaluate(module, trainer)
        record.update(epoch=epoch, step=trainer.global_step)
        metrics = {f"ranking/{k}": v for k, v in record.items() if isinstance(v, float)}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        self.history.append(record)
        write_json_atomic(cast(Path, self.folder) / RANKING_FILE, {"truth": self.truth, "evaluations": self.history})
        figures = ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in metrics.items())
        rank_zero_info(f"RankingMonitor (epoch {epoch}, {len(self._genotypes or [])} architectures): {figures}")

    # -- the parts ------------------------------------------------------------------------------------
    def evaluate(self, module: SearchModule, trainer: L.Trainer) -> dict[str, Any]:
        """Supernet accuracies at the fixed architectures and the figures they give."""
        genotypes, truths = self.architectures(module)
        data = self.evaluation_data(trainer)
        calibration = self._calibration if self.recalibrate_batches else None
        accuracies = [100 * supernet_accuracy(module.space, g, data, calibration=calibration) for g in genotypes]
        record: dict[str, Any] = {
            "mean_accuracy": statistics.fmean(accuracies),
            "accuracy_spread": statistics.pstdev(accuracies),
        }
        if self.history:
            record["stability"] = kendall_tau(self.history[-1]["supernet"], accuracies)
        if truths is not None:
            report = ranking_report(accuracies, truths, top_k=self.top_k)
            record.update({k: v for k, v in report.items() if k != "cells"})
            params = cast("list[float]", self.params)
            record.update(with_count_report(accuracies, params, truths, top_k=self.top_k))
            record["params"] = params
        record.update(architectures=[g.to_dict() for g in genotypes], supernet=accuracies, truth=truths)
        return record

    def architectures(self, module: SearchModule) -> tuple[list[Genotype], list[float] | None]:
        """The fixed architectures (drawn once, by ``seed``) and their true accuracies (None without a truth)."""
        if self._genotypes is None:
            generator = torch.Generator().manual_seed(self.seed)
            if self.truth is None:
                zeros = {k: torch.zeros_like(v.detach().cpu()) for k, v in module.space.arch.items()}
                uniform = ArchDistribution(zeros)
                self._genotypes = [module.space.genotype(uniform.sample(generator)) for _ in range(self.cells)]
            else:
                self._genotypes, self._truths = self._from_table(generator)
                for g in self._genotypes[:1]:
                    module.space.check_genotype(g)  # a NAS-Bench-201 table judges the NAS-Bench-201 space only
        return self._genotypes, self._truths

    def _from_table(self, generator: torch.Generator) -> tuple[list[Genotype], list[float]]:
        from unas_lightning.search.tabular import FMNIST201, open_table
        from unas_lightning.spaces.nb201.genotype import NB201Genotype

        table = open_table(cast(str, self.truth))
        if self.truth == FMNIST201:
            pool = [g for g in table.cells() if g.connected()]  # type: ignore[union-attr]  # FMNIST201Table
        else:  # every cell of the benchmark, one per isomorphism class, each class equally likely
            pool = [g for g in NB201Genotype.unique() if g.connected()]
        if len(pool) < 2:
            raise ValueError(f"RankingMonitor: the {self.truth} table holds {len(pool)} connected cells; it needs 2.")
        order = torch.randperm(len(pool), generator=generator)[: self.cells].tolist()
        genotypes = [pool[i] for i in order]
        self.params = [float(table.params_m(g)) for g in genotypes]
        return list(genotypes), [float(table.accuracy(g)) for g in genotypes]

    def evaluation_data(self, trainer: L.Trainer) -> list[tuple[Tensor, Tensor]]:
        """The first ``batches`` search-val batches, kept on the CPU: the same data at every evaluation (and
        the next ``recalibrate_batches`` as the calibration data)."""
        if self._data is None:
            datamodule = getattr(trainer, "datamodule", None)
            loader = datamodule.val_dataloader() if datamodule is not None else trainer.val_dataloaders
            if loader is None:
                raise ValueError("RankingMonitor needs validation data (a datamodule's val_dataloader).")
            kept: list[tuple[Tensor, Tensor]] = []
            for x, y in loader:
                kept.append((x, y))
                if len(kept) == self.batches + self.recalibrate_batches:
                    break
            self._data, self._calibration = kept[: self.batches], kept[self.batches :]
            if self.recalibrate_batches and not self._calibration:
                raise ValueError(
                    f"RankingMonitor: recalibrate_batches={self.recalibrate_batches} needs search-val batches "
                    f"beyond the {self.batches} evaluated; the loader has {len(kept)}. Lower batches."
                )
        return self._data
