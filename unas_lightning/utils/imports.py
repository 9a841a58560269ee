"""Importing an object by its dotted path ("package.module.Name"), as configs name classes."""

from __future__ import annotations

import importlib
from typing import Any


def import_dotted(path: str) -> Any:
    """The object ``path`` names: ``"unas_lightning.RetrainModule"`` -> the class.

    Raises ``ImportError`` (module missing), ``AttributeError`` (no such name in it) or ``ValueError``
    (no module part).

    Examples:
        >>> import_dotted("unas_lightning.spaces.DartsSpace").__name__
        'DartsSpace'
    """
    module, _, name = str(path).rpartition(".")
    if not module:
        raise ValueError(f"{path!r} is not a dotted path such as 'package.module.Name'.")
    return getattr(importlib.import_module(module), name)
