"""CostMonitor: what runs beside the search for its hardware costs (calibration, refits, logs, report)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from unas_lightning.utils.files import run_dir, write_json_atomic

if TYPE_CHECKING:
    from unas_lightning.costs import CostTerm
    from unas_lightning.search.module import SearchModule

REPORT_FILE = "costs.json"


class CostMonitor(L.Callback):
    """Drives every ``CostTerm`` of a ``SearchModule`` through the cost protocol (``costs/term.py``).

    * Before the first training batch: each term not calibrated yet (a fresh run; a resumed one keeps
      its surrogate) measures its calibration architectures and fits its surrogate g; the held-out
      error is printed and logged (``cost/<name>/surrogate_mae``, ``surrogate_mape``, ``surrogate_within10``).
    * After every phi-step: a term refits g when its ``refit_every_n_steps`` have passed.
    * After every epoch: ``cost/<name>/mode``, the measured cost of the most probable architecture.
    * At the end of training (before Lightning moves the model off its device, so a timing meter still
      measures where the search ran): ``costs.json`` next to ``genotype.json`` (per term: the derived
      architecture's measured and predicted cost, the meter, the penalty, the surrogate's error).

    Under DDP calibration is a collective (rank 0 measures, every rank holds the values) in
    ``on_train_start``, where no rank runs another collective first; the epoch log and the report are
    measured on rank 0 alone (``CostTerm.measured_here``, no collective), since a progress bar reduces
    metrics on rank 0 alone in the epoch-end hooks. The run folder is resolved once in ``setup``.
    ``SearchModule`` adds a ``CostMonitor`` to the trainer when it has costs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.folder: Path | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_dir(trainer)  # a collective under DDP: here, on every rank, once

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = cast("SearchModule", pl_module)
        for cost in _terms(module):
            if bool(cost.ready):
                continue
            start = time.perf_counter()
            line = cost.calibrate(dict(module.space.arch))
            rank_zero_info(f"{line} ({time.perf_counter() - start:.1f} s)")

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        module = cast("SearchModule", pl_module)
        if not module.searching:
            return
        for cost in _terms(module):
            cost.refit_if_due(dict(module.space.arch))
            for stat in ("mae", "mape", "within10"):
                value = cost.fit_metrics.get(f"test_{stat}")
                if isinstance(value, float):
                    pl_module.log(f"cost/{cost.name}/surrogate_{stat}", value, batch_size=1)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        module = cast("SearchModule", pl_module)
        mode = module.space.mode()
        for cost in _terms(module):
            pl_module.log(f"cost/{cost.name}/mode", cost.measured_here(mode), batch_size=1, rank_zero_only=True)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = cast("SearchModule", pl_module)
        if not len(module.costs) or not trainer.is_global_zero:
            return
        mode = module.space.mode()
        reports = {cost.name: cost.report(mode) for cost in _terms(module)}  # measured here, on rank 0
        folder = cast(Path, self.folder)  # set in setup
        shape = _terms(module)[0].example_shape
        report = {
            "genotype": module.space.genotype().to_dict(),
            "device": str(module.device),
            "input_shape": list(shape) if shape is not None else None,
            "costs": reports,
        }
        write_json_atomic(folder / REPORT_FILE, report)


def _terms(module: SearchModule) -> Sequence[CostTerm]:
    """The module's cost terms (an ``nn.ModuleList`` holding ``CostTerm`` objects only)."""
    return cast("Sequence[CostTerm]", module.costs)
