"""Where a run writes its outputs, and writing them so that no reader ever sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The file gets the mode an ordinary ``open(path, "w")`` would give it (0666 less the umask), not the
    private 0600 of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON, written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def run_dir(trainer: L.Trainer) -> Path:
    """The folder a run writes its outputs to: the logger's directory, else the trainer's root directory.

    A collective under DDP (``Trainer.log_dir`` broadcasts rank 0's folder, since the other ranks' loggers
    would pick the next free version): call it where every rank runs the same collectives in the same
    order, i.e. in a callback's ``setup`` hook, and keep the folder for the later hooks (as
    ``ModelCheckpoint`` keeps its ``dirpath``). Never in a hook that a progress bar or rank-zero-only code
    may precede with a metric reduction on some ranks only (``on_train_epoch_end``, ``on_validation_end``,
    ``on_train_end``): the ranks would wait in different collectives for ever (docs/contracts.md, DDP).
    """
    return Path(trainer.log_dir if trainer.log_dir is not None else trainer.default_root_dir)
