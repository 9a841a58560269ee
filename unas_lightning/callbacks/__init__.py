"""Lightning callbacks of unas_lightning."""

from unas_lightning.callbacks.architecture_monitor import ArchitectureMonitor
from unas_lightning.callbacks.estimator_diagnostics import EstimatorDiagnostics, gradient_statistics

__all__ = ["ArchitectureMonitor", "EstimatorDiagnostics", "gradient_statistics"]
