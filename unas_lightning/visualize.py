"""Deprecated: ``python -m unas_lightning.visualize`` moved to ``python -m unas_lightning.analysis.visualize``
(this alias goes in 0.3)."""

import warnings

from unas_lightning.analysis.visualize import *  # noqa: F403
from unas_lightning.analysis.visualize import main

warnings.warn(
    "unas_lightning.visualize moved to unas_lightning.analysis.visualize; the old path goes in 0.3",
    FutureWarning,
    stacklevel=2,
)

if __name__ == "__main__":
    main()
