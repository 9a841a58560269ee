"""The package type-checks: mypy over ``unas_lightning`` as configured in pyproject.toml (``[tool.mypy]``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_passes():
    # the files, the strictness and the third-party modules without stubs come from pyproject.toml; the
    # cache (.mypy_cache, ignored by git) makes a repeated run take about a second
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
