"""The latency and search-step benchmarks' --quick modes: each part runs and its table has the right rows.

Timings are never asserted (they are what the benchmarks measure); sizes that do not depend on the
machine are: torchvision's mobilenet_v2 has 3.50M parameters and 300M multiply-adds at 224x224.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, benchmark, markdown_rows, markdown_table, subprocess_env


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_latency_benchmark_quick_fits_a_surrogate_tracks_a_target_and_sizes_the_networks(capsys):
    benchmark("latency").main(["--quick"])
    out = capsys.readouterr().out
    surrogate = markdown_table(out, "## (a)")
    assert list(surrogate) == ["eager"] and surrogate["eager"][0] == "24"
    assert 0 < float(surrogate["eager"][3]) < 100  # held-out MAPE %, a real fit on measured latencies
    tracking = markdown_table(out, "## (b)")
    assert len(tracking) == 1 and all(float(c) > 0 for c in next(iter(tracking.values()))[:2])
    networks = markdown_table(out, "## (c)")
    assert len(networks) == 7 and {"ProxylessNAS-GPU", "mobilenet_v2", "efficientnet_b0"} <= set(networks)
    assert networks["mobilenet_v2"][2:] == ["3.50", "301"]  # params M, MACs M (published: 3.4-3.5M, 300M)


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_search_step_benchmark_quick_times_unas_darts_and_the_floor():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/search_step.py"), "--quick"],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = markdown_table(proc.stdout, "| method")
    assert [name.split(":")[0] for name in rows] == ["UNAS", "DARTS first order", "floor"]
    assert all(float(cells[0]) > 0 for cells in rows.values())
    assert rows[next(iter(rows))][3] and "ratios: unas/darts1=" in proc.stdout


def test_params_benchmark_matches_the_published_sizes(capsys):
    """benchmarks/params.py (5 s, no quick mode needed): every published parameter count within 5%."""
    benchmark("params").main([])
    rows = markdown_rows(capsys.readouterr().out, "| genotype")
    published = [row for row in rows if row[3]]  # genotype, network, params, published, ...
    assert len(rows) == 8 and len(published) == 4, rows
    for row in published:
        assert abs(float(row[2]) / float(row[3]) - 1) < 0.05, row
