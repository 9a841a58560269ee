"""The documentation site builds with no warning (broken links, stale API names), and the old public paths
that configs and users name still work for one release, with a FutureWarning."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
from conftest import QUICKSTART, ROOT


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "SearchModule" in api and "FMNIST201Table" in api, "the API reference did not render the docstrings"


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    assert lines[3:5] == [
        "bash scripts/setup.sh && .venv/bin/unas-cli fit --config configs/search/quickstart.yaml",
        "bash scripts/setup.sh test && .venv/bin/python -m pytest",
    ]


@pytest.mark.slow
def test_old_public_paths_still_work_with_a_future_warning(tmp_path):
    import importlib

    from unas_lightning.search.w_step import RelaxedSample

    for name in ("unas_lightning.w_step", "unas_lightning.visualize", "unas_lightning.costs.linear_model"):
        sys.modules.pop(name, None)
        with pytest.warns(FutureWarning, match="moved to"):
            module = importlib.import_module(name)
        assert module.__name__ == name
    assert sys.modules["unas_lightning.w_step"].RelaxedSample is RelaxedSample
    from unas_lightning.costs import fit_linear_model

    assert sys.modules["unas_lightning.costs.linear_model"].fit_linear_model is fit_linear_model

    from unas_lightning.cli import main

    overlay = tmp_path / "old.yaml"
    overlay.write_text(
        "model:\n  init_args:\n    w_step_arch:\n      class_path: unas_lightning.w_step.RelaxedSample\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(SystemExit) as done:
            main(["fit", "--config", str(QUICKSTART), "--config", str(overlay), "--print_config"])
    assert done.value.code == 0

    proc = subprocess.run(
        [sys.executable, "-m", "unas_lightning.visualize", "UNAS_CIFAR10", "--out", str(tmp_path / "draw")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "moved to unas_lightning.analysis.visualize" in proc.stderr, proc.stderr
    assert any((tmp_path / "draw").glob("*.png"))
