"""Lightning callbacks of unas_lightning."""

from unas_lightning.callbacks.estimator_diagnostics import EstimatorDiagnostics, gradient_statistics

__all__ = ["EstimatorDiagnostics", "gradient_statistics"]
