"""The search: ``SearchModule`` (w and phi, alternating manual steps), the step's objectives, the w-step's
architecture, and ``TabularSearch`` (phi alone, on a benchmark's table)."""

from unas_lightning.search.module import SearchModule
from unas_lightning.search.tabular import TabularSearch

__all__ = ["SearchModule", "TabularSearch"]
