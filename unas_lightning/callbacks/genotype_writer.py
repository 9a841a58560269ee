"""GenotypeWriter: the search's result on disk, as ModelCheckpoint keeps its weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, cast

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from unas_lightning.spaces.genotype import Genotype
from unas_lightning.utils.files import run_dir, write_text_atomic

GENOTYPE_FILE = "genotype.json"
HISTORY_FILE = "genotypes.jsonl"


class _SearchResult(Protocol):
    """What the writer needs of the module: its result so far (``SearchModule``, ``TabularSearch``)."""

    def genotype(self) -> Genotype | None: ...


class GenotypeWriter(L.Callback):
    """Writes the most probable genotype of a search into the run directory (rank 0 only).

    After every training epoch: ``genotype.json`` (atomically replaced), one line appended to the
    history ``genotypes.jsonl`` (epoch, step, genotype) and the genotype as TensorBoard text; at the
    end of fit: ``genotype.json`` once more. A run resumed in the same folder keeps one history: the
    lines after the checkpoint's step (epochs that will run again) are dropped when training restarts.
    The run directory is the logger's, else the trainer's ``default_root_dir``, resolved once in ``setup``
    on every rank (no later hook runs a collective: safe under DDP with a progress bar). Nothing is written
    while the module's ``genotype()`` is None (no phi-step yet). The module names its result through
    ``genotype()`` (``SearchModule``: the space's most probable architecture; ``TabularSearch``: the
    most probable cell); both add a writer to the trainer when none is configured.

    Args:
        filename: the genotype file's name.
        history: the history file's name (None: no history).
    """

    def __init__(self, filename: str = GENOTYPE_FILE, history: str | None = HISTORY_FILE):
        super().__init__()
        self.filename, self.history = filename, history
        self.folder: Path | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Resolve the run folder once, on every rank (a collective under DDP: never in the later hooks)."""
        self.folder = run_dir(trainer)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed run continues the history: lines written after the checkpoint's step are dropped."""
        path = cast(Path, self.folder) / self.history if self.history else None  # folder: set in setup
        if not trainer.is_global_zero or trainer.ckpt_path is None or path is None or not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _step(line) <= trainer.global_step]
        if len(kept) < len(lines):
            write_text_atomic(path, "".join(kept))

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module, history=self.history is not None)

    @override
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if cast(_SearchResult, pl_module).genotype() is None:
            rank_zero_warn("no phi-step ran in this run: no genotype.json was written (phi is untouched).")
            return
        self.write(trainer, pl_module, history=False)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, history: bool) -> None:
        """Write the genotype (and a history line), on rank 0; nothing while the module has no result."""
        genotype = cast(_SearchResult, pl_module).genotype()
        if genotype is None or not trainer.is_global_zero:
            return
        folder = cast(Path, self.folder)  # set in setup
        genotype.save(folder / self.filename)
        if not history:
            return
        entry = {"epoch": trainer.current_epoch, "step": trainer.global_step, "genotype": genotype.to_dict()}
        with open(folder / cast(str, self.history), "a") as f:  # history: asked for with a history file
            f.write(json.dumps(entry) + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("genotype", f"```\n{genotype.to_json()}\n```", trainer.global_step)


def _step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1  # a line we cannot read is kept
