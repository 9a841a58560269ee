"""The latency benchmark's and the device check's --quick modes (the device check runs the search-step benchmark):
each part runs and its table has the right rows.

Timings are never asserted (they are what the benchmarks measure); sizes that do not depend on the
machine are: torchvision's mobilenet_v2 has 3.50M parameters and 300M multiply-adds at 224x224.
"""

from __future__ import annotations

import json

import pytest
from conftest import benchmark, markdown_rows, markdown_table


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
def test_device_check_quick_measures_every_setting_fits_every_cost_model_and_times_the_search_step(tmp_path):
    """benchmarks/device_check.py --quick (the prepared GPU script at toy sizes on this CPU): every part runs
    and writes its JSON and markdown; search_step.py runs through it (fp32: UNAS, DARTS, the floor; bf16)."""
    result = benchmark("device_check").main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "device_check.json").read_text())
    assert saved["device"].startswith("CPU") and saved["date"] and set(saved) >= {"protocol", "predictors", "step"}
    settings = {r["setting"] for r in result["protocol"]["rows"] if "median_ms" in r}
    for net in ("ProxylessNAS-GPU", "DARTS-V2"):
        assert {f"{net} b=8 eager fp32", f"{net} b=8 eager bf16", f"{net} b=8 eager fp32 channels-last"} <= settings
        assert {f"{net} b=1 eager fp32", f"{net} b=1 eager bf16"} <= settings
    rows = result["predictors"]["rows"]
    assert [r["space"] for r in rows] == ["proxyless", "darts"]
    for r in rows:
        assert r["archs"] == 20 and 0 <= r["noise_within10"] <= 100 and r["noise_mape"] >= 0
        assert set(r["models"]) == {"linear", "pairwise", "mlp", "auto"}
        assert all(0 < m["mape"] < 1000 and 0 <= m["within10"] <= 100 for m in r["models"].values())
        assert r["models"]["auto"]["chosen"] in ("linear", "pairwise", "mlp")
    steps = {r["config"]: [m["method"] for m in r.get("rows", [])] for r in result["step"]["rows"]}
    assert steps == {"fp32": ["unas", "darts1", "floor"], "bf16": ["unas"]}, result["step"]
    assert all(m["ms_per_step"] > 0 for r in result["step"]["rows"] for m in r["rows"])
    md = (tmp_path / "device_check.md").read_text()
    assert "## Latency predictors" in md and "## Search step" in md and "| fp32 | darts1 |" in md


def test_params_benchmark_matches_the_published_sizes(capsys):
    """benchmarks/params.py (5 s, no quick mode needed): every published parameter count within 5%."""
    benchmark("params").main([])
    rows = markdown_rows(capsys.readouterr().out, "| genotype")
    published = [row for row in rows if row[3]]  # genotype, network, params, published, ...
    assert len(rows) == 8 and len(published) == 4, rows
    for row in published:
        assert abs(float(row[2]) / float(row[3]) - 1) < 0.05, row
