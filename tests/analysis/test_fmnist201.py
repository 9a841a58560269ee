"""FMNIST-201: isomorphism classes, the builder on a tiny budget, the table API, a tabular search from the CLI."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, benchmark, run_cli_here

from unas_lightning.analysis.fmnist201 import SHIPPED, FMNIST201Table, Protocol
from unas_lightning.spaces.nb201.genotype import NB201Genotype


def test_the_15625_cells_fall_into_the_6466_classes_of_nas_bench_201():
    keys = [g.unique_key() for g in NB201Genotype.all()]
    assert len(set(keys)) == 6466
    disconnected = {k for g, k in zip(NB201Genotype.all(), keys, strict=True) if not g.connected()}
    assert all(g.connected() for g, k in zip(NB201Genotype.all(), keys, strict=True) if k not in disconnected)
    unique = NB201Genotype.unique()  # one representative per class, the first in table-key order
    assert len(unique) == 6466 and {g.unique_key() for g in unique} == set(keys)
    assert unique[0] == next(NB201Genotype.all())


def test_the_sample_order_mixes_uniform_and_top_cells_without_a_class_twice():
    order = benchmark("fmnist201").sample_order(uniform=20, top=5)
    keys = [g.unique_key() for g, _ in order]
    assert len(keys) == len(set(keys)) <= 25
    assert {s for _, s in order} == {"uniform", "cifar10_top"}
    assert [s for _, s in order[:5]].count("cifar10_top") <= 1  # spread through the order, not at its end


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    """``benchmarks/fmnist201.py build --quick``: 2 cells x 2 seeds, a tiny protocol; then the same command
    again (it resumes: nothing is trained twice)."""
    out = tmp_path_factory.mktemp("fmnist201") / "tiny.json"
    build = benchmark("fmnist201").main
    build(["build", "--quick", "--out", str(out), "--workers", "1"])
    first = out.read_text()
    build(["build", "--quick", "--out", str(out), "--workers", "1"])
    assert out.read_text() == first, "a finished build trained again"
    return out


@pytest.mark.usefixtures("fashion_mnist_available")
def test_the_builder_writes_a_table_that_the_public_api_reads(tiny_table):
    data = json.loads(tiny_table.read_text())
    assert data["seeds"] == [0, 1] and data["protocol"]["channels"] == 4 and data["built"] and data["hardware"]
    table = FMNIST201Table(tiny_table, train_missing=False)
    assert len(table) == 2 and table.protocol == Protocol.from_dict(data["protocol"])
    for cell in table.cells():
        record = data["cells"][cell.unique_key()]
        assert table.accuracies(cell) == record["val_acc"] and len(record["test_acc"]) == 2
        by_string = NB201Genotype.from_arch_str(record["arch"])
        assert table.accuracy(by_string) == table.accuracy(cell) == sum(record["val_acc"]) / 2
        index = int(cell.table_key(), 5)  # table-key order: the key read as a base-5 number
        assert float(table.mean_accuracies[index]) == pytest.approx(table.accuracy(cell))
    assert table.seed_accuracies.shape == (15625, 2)
    outside = next(g for g in NB201Genotype.all() if g.connected() and g not in table)
    with pytest.raises(KeyError, match="not in the FMNIST-201 table"):
        table.accuracy(outside)
    assert table.accuracy(NB201Genotype.from_table_key("000000")) == 10.0  # disconnected: chance, no training


@pytest.mark.usefixtures("fashion_mnist_available")
def test_the_ground_truth_report_ranks_a_found_cell_in_the_table_and_trains_one_outside_it(tiny_table, tmp_path):
    """GroundTruthReport: a cell of the table is ranked among the table's cells; one outside the sample is
    trained with the table's protocol (the tiny one here), cached in the run folder, then ranked; without
    train_missing it is reported as missing. A DARTS genotype is refused with a message naming the space."""
    from unas_lightning.callbacks import GroundTruthReport
    from unas_lightning.callbacks.ground_truth import describe
    from unas_lightning.genotypes import load_genotype

    table = FMNIST201Table(tiny_table, train_missing=False)
    inside = max(table.cells(), key=table.test_accuracy)
    report = GroundTruthReport(table_path=str(tiny_table)).judge(inside, tmp_path)
    assert report["accuracy"] == report["table_best"] == pytest.approx(table.test_accuracy(inside))
    assert report["regret"] == 0 and report["percentile"] == 50.0 and report["measure"] == "test"  # 1 of 2 below
    assert report["val_accuracy"] == pytest.approx(table.accuracy(inside)) and report["table_cells"] == 2
    assert "percentile:      50.0 of 2 cells" in describe(report)

    outside = next(g for g in NB201Genotype.all() if g.connected() and g not in table)
    missing = GroundTruthReport(train_missing=False, table_path=str(tiny_table)).judge(outside, tmp_path)
    assert missing["missing"] and "not in the table" in describe(missing)
    trained = GroundTruthReport(table_path=str(tiny_table)).judge(outside, tmp_path)
    assert 0 <= trained["percentile"] <= 100 and trained["table_cells"] == 2  # ranked among the sample
    cached = FMNIST201Table(tiny_table, cache_dir=tmp_path, train_missing=False)
    assert trained["accuracy"] == pytest.approx(cached.test_accuracy(outside))
    with pytest.raises(ValueError, match="judges NAS-Bench-201 cells, got a 'darts'-space genotype"):
        GroundTruthReport(table_path=str(tiny_table)).judge(load_genotype("DARTS_V2"), tmp_path)
    with pytest.raises(ValueError, match="truth must be one of"):
        GroundTruthReport("fashion-mnist")


def test_the_shipped_table_records_how_it_was_built_and_reads_like_nas_bench_201():
    """The table in the package: its protocol, seeds, hardware and date; every cell's two seeds; lookups by
    arch string, genotype and table key agree. It is built across sessions (resumable): it holds at least
    300 classes x 2 seeds, a prefix of the build order until the planned sample is complete."""
    data = json.loads(SHIPPED.read_text())
    assert data["seeds"] == [0, 1] and data["hardware"] and data["built"] and data["planned"] >= 300
    table = FMNIST201Table(train_missing=False)
    assert table.protocol == Protocol.from_dict(data["protocol"]) == Protocol()  # `build` resumes it
    assert 300 <= len(table) <= data["planned"]
    for key, record in data["cells"].items():
        if key not in table.records:  # a cell whose second seed is still to train
            assert None in record["val_acc"] and record["val_acc"].count(None) < 2
            continue
        cell = NB201Genotype.from_arch_str(record["arch"])
        assert cell.unique_key() == key and table.accuracies(cell) == record["val_acc"]
        assert table.accuracy(cell) == pytest.approx(sum(record["val_acc"]) / 2)
        assert float(table.mean_accuracies[int(cell.table_key(), 5)]) == pytest.approx(table.accuracy(cell))
        assert len(record["test_acc"]) == 2 and record["params"] > 0
        assert min(record["train_seconds"]) > 0 if cell.connected() else record["val_acc"] == [10.0, 10.0]
    best, accuracy = table.best()
    assert best in table and accuracy == max(table.accuracy(c) for c in table.cells())


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_a_tabular_search_on_fmnist201_from_the_cli_trains_missing_cells_into_the_run_folder(
    tiny_table, tmp_path, capsys
):
    args = [
        "fit", "--config", str(ROOT / "configs/search/nb201_tabular.yaml"),
        "--model.init_args.dataset", "fmnist201", "--model.init_args.table_path", str(tiny_table),
        "--model.init_args.estimator", "unas_lightning.estimators.Reinforce",
        "--model.init_args.estimator.init_args.num_samples", "2", "--model.init_args.queries", "4",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    proc = run_cli_here(args, capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "nb201_tabular" / "latest"
    cached = json.loads((run / "fmnist201_on_demand.json").read_text())
    assert cached["protocol"] == json.loads(tiny_table.read_text())["protocol"] and cached["cells"]
    genotype = NB201Genotype.from_arch_str(json.loads((run / "genotype.json").read_text())["arch"])
    table = FMNIST201Table(tiny_table, cache_dir=run, train_missing=False)
    assert genotype in table, "the result's accuracy was not measured"
