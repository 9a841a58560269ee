"""The package type-checks: mypy over ``unas_lightning`` as configured in pyproject.toml (``[tool.mypy]``).

mypy starts when the tests are collected (``conftest.pytest_collection_finish``; under pytest-xdist on the
first worker) and runs beside the tests before this one; this test waits for it. The settings, the files
and the third-party modules without stubs come from pyproject.toml; the cache (.mypy_cache, ignored by
git) makes a repeated run take a few seconds.
"""

from __future__ import annotations

from conftest import mypy_result


def test_mypy_passes():
    code, output = mypy_result()
    assert code == 0, output
