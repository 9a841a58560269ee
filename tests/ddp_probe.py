"""Test-only callbacks: each rank's phi, genotype and cost caches after every epoch; a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class DumpPhiPerRank(Callback):
    """Saves ``phi_rank{r}_epoch{e}.pt``, ``estimator_rank{r}_epoch{e}.pt`` (its tensors: tuned eta, beta, ...),
    ``genotype_rank{r}.json`` and, when the search has costs, their measured values
    ``cost_cache_rank{r}_epoch{e}.json`` into ``out_dir``."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_train_epoch_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        r, e = trainer.global_rank, trainer.current_epoch
        phi = {k: v.detach().cpu().clone() for k, v in pl_module.space.arch.items()}
        torch.save(phi, self.out_dir / f"phi_rank{r}_epoch{e}.pt")
        estimator = {
            k: v.detach().cpu().clone() for k, v in pl_module.estimator.state_dict().items() if torch.is_tensor(v)
        }
        torch.save(estimator, self.out_dir / f"estimator_rank{r}_epoch{e}.pt")
        (self.out_dir / f"genotype_rank{r}.json").write_text(json.dumps(pl_module.space.genotype().to_dict()))
        if len(pl_module.costs):
            caches = {cost.name: cost.cache for cost in pl_module.costs}
            (self.out_dir / f"cost_cache_rank{r}_epoch{e}.json").write_text(json.dumps(caches, sort_keys=True))


class KillSelf(Callback):
    """Sends SIGKILL to its own process at the start of batch ``batch`` of epoch ``epoch`` (no clean-up)."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalLauncher(Callback):
    """On rank ``rank``, at the start of batch ``batch`` of epoch ``epoch``, sends ``signum`` to the launcher
    (rank 0's process: the parent of the other ranks, or itself on rank 0), as ``timeout`` or ``scancel`` would."""

    def __init__(self, epoch: int, batch: int, rank: int = 1, signum: int = int(signal.SIGTERM)):
        self.epoch, self.batch, self.rank, self.signum = epoch, batch, rank, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid() if self.rank == 0 else os.getppid(), self.signum)


class CollectiveOnRankZero(Callback):
    """A callback that breaks the DDP rule: a barrier on rank 0 alone at the end of epoch ``epoch``."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.is_global_zero and trainer.current_epoch == self.epoch:
            trainer.strategy.barrier("rank-zero-only")
