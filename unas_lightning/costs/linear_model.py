"""Deprecated: ``unas_lightning.costs.linear_model`` moved to :mod:`unas_lightning.costs.fitting` (goes in 0.3)."""

import warnings

from unas_lightning.costs.fitting import LinearFit, arch_features, fit_linear_model, ridge  # noqa: F401

warnings.warn(
    "unas_lightning.costs.linear_model moved to unas_lightning.costs.fitting; the old path goes in 0.3",
    FutureWarning,
    stacklevel=2,
)
