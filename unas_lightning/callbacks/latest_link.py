"""LatestRunLink: ``<root>/<name>/latest`` points at the version folder of the newest run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from unas_lightning.utils.files import run_dir

LATEST = "latest"


class LatestRunLink(L.Callback):
    """At the start of fit (after the data and model set up), on rank 0, point ``latest`` at this run.

    The link sits next to the version folders (``runs/quickstart/latest -> version_3``), so that
    ``runs/quickstart/latest/genotype.json`` always names the newest search's result and
    ``runs/retrain_quick/latest/checkpoints/last.ckpt`` the newest retrain's weights. A resumed run
    continues in its own version folder, which the link then names again. ``unas-cli`` adds this
    callback to every fit; nothing is linked when the run has no version folder (no logger).

    Args:
        name: the link's name.
    """

    def __init__(self, name: str = LATEST):
        super().__init__()
        self.name = name
        self.folder: Path | None = None

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_dir(trainer)  # a collective under DDP: resolved here, on every rank, once

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = cast(Path, self.folder)  # set in setup
        if not trainer.is_global_zero or trainer.logger is None or folder.name == self.name:
            return
        link = folder.parent / self.name
        try:
            link_here(link, folder)
        except OSError as err:  # a file system without symlinks: the run goes on, the version paths still work
            rank_zero_warn(f"could not point {link} at {folder.name} ({err}); use the version folder's path.")


def link_here(link: Path, target: Path) -> None:
    """Point the symlink ``link`` at ``target`` (relative), replacing an older link but never a real folder."""
    if link.exists() and not link.is_symlink():
        return  # a folder or file the user made: leave it alone
    target.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)
