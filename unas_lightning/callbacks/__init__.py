"""Lightning callbacks of unas_lightning: what runs beside the search loop."""

from unas_lightning.callbacks.architecture_monitor import ArchitectureMonitor
from unas_lightning.callbacks.cost_monitor import CostMonitor
from unas_lightning.callbacks.estimator_diagnostics import EstimatorDiagnostics, gradient_statistics
from unas_lightning.callbacks.genotype_writer import GenotypeWriter
from unas_lightning.callbacks.graceful_shutdown import GracefulShutdown, RunInterrupted
from unas_lightning.callbacks.ground_truth import GroundTruthReport
from unas_lightning.callbacks.latest_link import LatestRunLink
from unas_lightning.callbacks.ranking_monitor import RankingMonitor

__all__ = [
    "ArchitectureMonitor",
    "CostMonitor",
    "EstimatorDiagnostics",
    "GenotypeWriter",
    "GracefulShutdown",
    "GroundTruthReport",
    "LatestRunLink",
    "RankingMonitor",
    "RunInterrupted",
    "gradient_statistics",
]
