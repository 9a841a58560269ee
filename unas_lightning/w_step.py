"""Deprecated: ``unas_lightning.w_step`` moved to :mod:`unas_lightning.search.w_step` (this alias goes in 0.3)."""

import warnings

from unas_lightning.search.w_step import *  # noqa: F403

warnings.warn(
    "unas_lightning.w_step moved to unas_lightning.search.w_step; the old path goes in 0.3",
    FutureWarning,
    stacklevel=2,
)
