"""Finding the checkpoint to resume from, and refusing one that does not fit the model.

``unas-cli fit --ckpt_path last`` resumes from the newest ``last*.ckpt`` of the run (any version
directory under the logger's root or the trainer's ``default_root_dir``), whereas Lightning alone
looks only in the new run's own version directory and silently starts afresh. A checkpoint written
by another kind of module (``check_written_by``), search space or network (``check_checkpoint_fits``)
is rejected before anything is written, with what differs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unas_lightning.utils.imports import import_dotted

LAST = re.compile(r"^last(-v\d+)?\.ckpt$")


def find_last_checkpoint(roots: list[Path]) -> Path | None:
    """The most recently written ``last.ckpt`` (or ``last-vN.ckpt``) below any of ``roots``."""
    found = {p for root in roots for p in root.rglob("last*.ckpt") if LAST.match(p.name)}
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint on the CPU with ``weights_only=True`` (tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle we refuse to execute, a truncated file, not a checkpoint at all
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.startswith("Check the doc")]
        detail = lines[-1] if lines else ""
        raise ValueError(
            f"cannot read checkpoint {path}: it is truncated, corrupted or not a checkpoint written by "
            f"Lightning ({type(err).__name__}: {detail}). Pass another .ckpt file, or 'last'."
        ) from None


def _import(class_path: str) -> Any:
    try:
        return import_dotted(class_path)
    except (ImportError, AttributeError, ValueError):
        return None


def check_written_by(checkpoint: dict, model_class: str | None, path: str | os.PathLike) -> None:
    """Raise ``ValueError`` when ``checkpoint`` was written by a module unrelated to ``model_class``.

    The writer is the ``_class_path`` LightningCLI stores in the hyperparameters; a module and its
    subclasses are related. A search checkpoint holds a supernet and a retrain checkpoint one derived
    network: the message says which is which and what to run instead.
    """
    written_by = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if not written_by or not model_class:
        return
    theirs, ours = _import(written_by), _import(model_class)
    if theirs is not None and ours is not None and (issubclass(ours, theirs) or issubclass(theirs, ours)):
        return
    if theirs is None and ours is None and written_by == model_class:
        return
    kinds = {"SearchModule": "a search's supernet", "RetrainModule": "a retrained network"}
    what = kinds.get(written_by.rpartition(".")[2], written_by)
    advice = {
        "SearchModule": "a search is retrained from its genotype.json (unas-cli fit --config configs/retrain/... "
        "--model.init_args.genotype RUN/genotype.json), and that retrain's checkpoint is the one to test",
        "RetrainModule": "test it with the retrain config that trained it (unas-cli test --config "
        "configs/retrain/... --ckpt_path ...); a search resumes only from a search checkpoint",
    }.get(written_by.rpartition(".")[2], "use the config that wrote it")
    raise ValueError(f"checkpoint {path} holds {what} ({written_by}) but this config builds {model_class}: {advice}.")


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


def check_checkpoint_fits(model: nn.Module, path: str | os.PathLike, checkpoint: dict | None = None) -> None:
    """Raise ``ValueError`` saying what differs when the checkpoint at ``path`` does not fit ``model``
    (``checkpoint``: its contents when already loaded)."""
    problem = checkpoint_mismatch(model, checkpoint if checkpoint is not None else load_checkpoint(path))
    if problem is not None:
        describe = getattr(model, "describe", None)
        this = f" This run is {describe()}." if callable(describe) else ""
        raise ValueError(
            f"checkpoint {path} does not fit this model: {problem}.{this} Resume with the config that wrote "
            "it, or start a fresh run without --ckpt_path."
        )
