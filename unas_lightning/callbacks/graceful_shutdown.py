"""GracefulShutdown: SIGTERM or Ctrl-C stops every rank at one batch, with a checkpoint that resumes exactly."""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from unas_lightning.utils.files import run_dir

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_SECONDS = 60.0

# what ``signal.signal`` takes and returns: a handler, SIG_DFL/SIG_IGN, or None (not installed from Python)
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class RunInterrupted(SystemExit):
    """Raised on every rank at the batch where the ranks agreed to stop; the exit status is 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(128 + int(signum))
        self.signum = int(signum)


class GracefulShutdown(L.Callback):
    """Stops a fit on SIGTERM or SIGINT (``timeout``, SLURM's ``scancel``, Ctrl-C) on every rank at once.

    From the start of training its handlers only note the signal. After every training batch the ranks
    agree whether any of them got one (under DDP one all-reduce of one number per step, reached by every
    rank in the same order; nothing on a single process); when one did, every rank writes the run's
    ``last.ckpt`` at that batch (the state a ``ModelCheckpoint`` writes after a batch, so ``--ckpt_path
    last`` continues bit-exactly, mid-epoch included) and raises :class:`RunInterrupted`: the run exits
    with status 128 + the signal (143 for SIGTERM, 130 for SIGINT), and the launcher waits for the ranks
    it started. Only the launcher needs to receive the signal.

    When no batch ends within ``grace_seconds`` of the signal (a rank stuck in a collective, a long
    validation or calibration), or a second signal arrives, the process prints where its main thread is
    (the hook and the line), kills the ranks it launched and exits with the same status: the last
    checkpoint written before stays the one to resume from. ``unas-cli`` adds this callback to every fit.

    Args:
        grace_seconds: seconds from the first signal to the hard stop.

    Examples:
        >>> GracefulShutdown(grace_seconds=30).grace_seconds
        30.0
    """

    def __init__(self, grace_seconds: float = GRACE_SECONDS):
        super().__init__()
        if not grace_seconds > 0:
            raise ValueError(f"grace_seconds must be > 0, got {grace_seconds}.")
        self.grace_seconds = float(grace_seconds)
        self.signum = 0  # the first signal received, 0 while none
        self.folder: Path | None = None
        self._previous: dict[int, _Handler] = {}
        self._timer: threading.Timer | None = None
        self._launched: list[Any] = []  # the launcher's processes (``subprocess.Popen``)

    # -- hooks ----------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_dir(trainer)  # a collective under DDP: here, on every rank, once

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the handlers (after Lightning's own, which would run a collective inside the handler)."""
        self.signum = 0
        self._launched = list(getattr(trainer.strategy.launcher, "procs", None) or [])
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        signum = self.signum
        if trainer.world_size > 1:  # every rank reaches this hook after every batch, in the same order
            flag = torch.tensor(float(signum), device=pl_module.device)
            signum = int(trainer.strategy.reduce(flag, reduce_op="max").item())
        if not signum:
            return
        path = self.checkpoint_path(trainer)
        if trainer.is_global_zero and path.is_symlink():
            path.unlink()  # save_last="link": write a file, not through the link into a top-k checkpoint
        trainer.save_checkpoint(path)  # every rank (barriers inside); rank 0 writes
        self._cancel_timer()
        rank_zero_info(
            f"{signal.Signals(signum).name} received: stopped at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}; checkpoint {path}. Resume with the same command and --ckpt_path last."
        )
        raise RunInterrupted(signum)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    # -- helpers --------------------------------------------------------------------------------------
    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        """The ``last.ckpt`` of a ``ModelCheckpoint(save_last=...)``, else ``<run folder>/checkpoints/last.ckpt``."""
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
                return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
        folder = self.folder if self.folder is not None else Path(trainer.default_root_dir)
        return folder / "checkpoints" / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signum:  # a second signal: stop now
            self._hard_stop(signum, "a second signal")
            return
        self.signum = int(signum)
        print(
            f"[rank {_rank()}] {signal.Signals(signum).name}: stopping after this batch "
            f"(a second signal, or {self.grace_seconds:g} s without a batch end, stops at once)",
            file=sys.stderr,
            flush=True,
        )
        self._timer = threading.Timer(self.grace_seconds, self._hard_stop, (signum, f"{self.grace_seconds:g} s"))
        self._timer.daemon = True
        self._timer.start()

    def _hard_stop(self, signum: int, why: str) -> None:
        ident = threading.main_thread().ident
        where = describe_frames(sys._current_frames().get(ident) if ident is not None else None)
        print(
            f"[rank {_rank()}] no batch ended after {why}: stopping now, in {where}; "
            "resume from the last checkpoint written (--ckpt_path last)",
            file=sys.stderr,
            flush=True,
        )
        for proc in self._launched:
            if proc.poll() is None:
                proc.kill()
        for proc in self._launched:
            proc.wait()
        os._exit(128 + int(signum))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _restore(self) -> None:
        self._cancel_timer()
        if threading.current_thread() is threading.main_thread():
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
        self._previous = {}


HOOK_OWNERS = (L.Callback, L.LightningModule, L.LightningDataModule)


def describe_frames(frame: FrameType | None) -> str:
    """Where a stack stands, for a person: the innermost Lightning hook (``GenotypeWriter.on_train_epoch_end``)
    and the innermost line, e.g. ``GenotypeWriter.on_train_epoch_end -> broadcast (.../distributed_c10d.py:2856)``."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return describe_stack(frames)


def describe_traceback(tb: TracebackType | None) -> str:
    """``describe_frames`` for an exception's traceback (innermost frame last in the chain)."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return describe_stack(frames[::-1])


def describe_stack(frames: list[FrameType]) -> str:
    """``frames`` innermost first: the innermost hook owned by a callback, module or data module, and the
    innermost frame's function and line."""
    if not frames:
        return "an unknown place"
    inner = traceback.extract_stack(frames[0], limit=1)[-1]
    here = f"{inner.name} ({inner.filename}:{inner.lineno})"
    for f in frames:
        owner = f.f_locals.get("self")
        if isinstance(owner, HOOK_OWNERS):
            hook = f"{type(owner).__name__}.{f.f_code.co_name}"
            return hook if f is frames[0] else f"{hook} -> {here}"
    return here


def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
