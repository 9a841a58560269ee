"""Finding the checkpoint to resume from, and refusing one that does not fit the model.

``unas-cli fit --ckpt_path last`` resumes from the newest ``last*.ckpt`` of the run (any version
directory under the logger's root or the trainer's ``default_root_dir``), whereas Lightning alone
looks only in the new run's own version directory and silently starts afresh. A checkpoint written
by another search space or network is rejected before anything is written, with what differs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

LAST = re.compile(r"^last(-v\d+)?\.ckpt$")


def run_roots(trainer) -> list[Path]:
    """Folders that hold this run's checkpoints: the loggers' roots and ``default_root_dir``."""
    roots = [Path(getattr(lg, "root_dir", None) or lg.save_dir) for lg in trainer.loggers if lg.save_dir]
    roots.append(Path(trainer.default_root_dir))
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "dirpath", None):
            roots.append(Path(cb.dirpath))
    return [r for r in dict.fromkeys(roots) if r.is_dir()]


def find_last_checkpoint(roots: list[Path]) -> Path | None:
    """The most recently written ``last.ckpt`` (or ``last-vN.ckpt``) below any of ``roots``."""
    found = {p for root in roots for p in root.rglob("last*.ckpt") if LAST.match(p.name)}
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True`` (tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle we refuse to execute, a truncated file, not a checkpoint at all
        raise ValueError(f"cannot read checkpoint {path} ({type(err).__name__}: {err}).") from None


def checkpoint_mismatch(model: nn.Module, checkpoint: dict) -> str | None:
    """What keeps ``checkpoint["state_dict"]`` from loading into ``model``; None when it fits."""
    saved = checkpoint.get("state_dict")
    if not isinstance(saved, dict):
        return "it holds no model state_dict"
    own = model.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in saved and hasattr(saved[k], "shape") and tuple(saved[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors of this model are not in it (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} of its tensors are not in this model (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} shapes differ (e.g. {'; '.join(shapes[:3])})")
    written_by = checkpoint.get("unas", {}).get("model")
    return "; ".join(parts) + (f"; it was written by {written_by}" if written_by else "")


def check_checkpoint_fits(model: nn.Module, path: str | os.PathLike) -> None:
    """Raise ``ValueError`` saying what differs when the checkpoint at ``path`` does not fit ``model``."""
    problem = checkpoint_mismatch(model, load_checkpoint(path))
    if problem is not None:
        describe = getattr(model, "describe", None)
        this = f" This run is {describe()}." if callable(describe) else ""
        raise ValueError(
            f"checkpoint {path} does not fit this model: {problem}.{this} Resume with the config that wrote "
            "it, or start a fresh run without --ckpt_path."
        )
