"""The NAS-Bench-201 space: names that round-trip, networks that match the benchmark's table, the tabular
objective, the supernet, and a weight-sharing search -> benchmark string -> retrain run on Fashion-MNIST."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import ROOT, benchmark

from unas_lightning.analysis.fmnist201 import FMNIST201Table
from unas_lightning.analysis.ranking import SUPERNET_COUNT_WEIGHTS, rank_average, ranking_report
from unas_lightning.costs import Candidate, NB201TableCost
from unas_lightning.estimators import Reinforce
from unas_lightning.genotypes import load_genotype
from unas_lightning.spaces import DartsGenotype, NB201Genotype, NB201Network, NB201Space
from unas_lightning.spaces.batch_groups import batch_groups
from unas_lightning.spaces.nb201 import NB201_OPS
from unas_lightning.spaces.nb201.table import NB201Table, TableObjective, cell_index, cell_of_index


@pytest.fixture(scope="module")
def cifar10() -> NB201Table:
    return NB201Table("cifar10")


def test_every_cell_round_trips_through_strings_keys_and_the_space(cifar10):
    space = NB201Space(channels=4, cells_per_stage=1)
    cells = list(NB201Genotype.all())
    assert len(cells) == 15625 == len(set(cells))
    assert {g.table_key() for g in cells} == set(cifar10.records)  # our keys are exactly the table's
    for i, g in enumerate(cells):
        assert NB201Genotype.from_arch_str(g.to_arch_str()) == g
        assert NB201Genotype.from_table_key(g.table_key()) == g
        assert cell_of_index(i) == g
    arches = torch.stack([space.arch_of(g)["cell"] for g in cells])
    assert torch.equal(cell_index(arches), torch.arange(len(cells)))
    assert all(space.genotype({"cell": a}) == g for a, g in zip(arches[::97], cells[::97], strict=True))
    g = cells[1234]
    assert json.loads(g.to_json()) == {"space": "nb201", "arch": g.to_arch_str()}
    assert NB201Genotype.from_json(g.to_json()) == g


def test_networks_have_the_tables_parameter_counts(cifar10):
    """Pins the operations: convolutions 1x1 vs 3x3 differ in size, the rest has none."""
    rng = random.Random(0)
    keys = ["000000", "333132", "333133", "222222", *rng.sample(sorted(cifar10.records), 8)]
    for key in keys:
        g = NB201Genotype.from_table_key(key)
        net = NB201Network(g, in_channels=3, num_classes=10)
        assert sum(p.numel() for p in net.parameters()) == round(1e6 * cifar10.params_m(g)), key
    cifar100 = NB201Table("cifar100")
    g = NB201Genotype.from_table_key(keys[-1])
    assert sum(p.numel() for p in NB201Network(g, num_classes=100).parameters()) == round(1e6 * cifar100.params_m(g))


def test_the_tables_accuracies_pin_the_edge_order(cifar10):
    """Cells whose output cannot reach the input (by our edge order) sit at chance in the table, every
    other cell well above it; the ResNet cell has the benchmark paper's accuracy (90.83% on CIFAR-10 valid)."""
    acc = cifar10.mean_accuracies
    connected = torch.tensor([g.connected() for g in NB201Genotype.all()])
    assert int((~connected).sum()) == 341
    assert float(acc[~connected].max()) < 10.5 < 30 < float(acc[connected].min())
    resnet = load_genotype("NB201_RESNET")
    assert cifar10.accuracy(resnet) == pytest.approx(90.83, abs=0.2)
    best, best_acc = cifar10.best()
    assert best == load_genotype("NB201_BEST_CIFAR10") and best_acc == pytest.approx(91.61, abs=0.01)


def test_table_objective_returns_real_table_values(cifar10):
    cell = load_genotype("NB201_RESNET")
    one_hot = NB201Space(channels=4, cells_per_stage=1).arch_of(cell)
    seeds = cifar10.accuracies(cell)
    noisy = TableObjective(cifar10, noisy=True, generator=torch.Generator().manual_seed(0))
    drawn = {round(100 * (1 - float(noisy(one_hot))), 6) for _ in range(40)}
    assert drawn == {round(a, 6) for a in seeds}  # every training seed's accuracy, and nothing else
    exact = TableObjective(cifar10, noisy=False)
    assert float(exact(one_hot)) == pytest.approx(1 - cifar10.accuracy(cell) / 100)
    rows = torch.stack([one_hot["cell"], NB201Space(channels=4, cells_per_stage=1).arch_of(cifar10.best()[0])["cell"]])
    assert exact({"cell": rows}).shape == (2,) and exact.queries == 3
    with pytest.raises(ValueError, match="black-box estimator"):
        exact({"cell": torch.full((6, 5), 0.2)})


def test_reinforce_on_the_table_moves_towards_better_cells(cifar10):
    """300 noisy queries of REINFORCE (4 samples, leave-one-out baseline): the expected true accuracy under
    p_phi rises well above the uniform distribution's (83.7%) on every one of 3 seeds."""
    for seed in range(3):
        torch.manual_seed(seed)
        logits = {"cell": torch.zeros(6, 5, requires_grad=True)}
        objective = TableObjective(cifar10, generator=torch.Generator().manual_seed(seed))
        estimator, opt = Reinforce(num_samples=4), torch.optim.Adam(logits.values(), lr=0.1)
        while objective.queries < 300:
            opt.zero_grad()
            estimator.surrogate(logits, objective).loss.backward()
            opt.step()
        p = logits["cell"].softmax(-1).detach().double()
        # E_p[acc] over all 15,625 cells: p(cell) = prod_e p[e, op_e]
        probs = torch.ones(1, dtype=torch.float64)
        for e in range(6):
            probs = (probs[:, None] * p[e][None, :]).reshape(-1)
        expected = float((probs * cifar10.mean_accuracies).sum())
        assert expected > 87.0, (seed, expected)


def test_table_cost_reads_latency_and_size(cifar10):
    space = NB201Space(channels=4, cells_per_stage=1)
    cell = load_genotype("NB201_BEST_CIFAR10")
    candidate = Candidate(cell, space, (3, 32, 32))
    assert NB201TableCost("latency").measure(candidate) == pytest.approx(cifar10.latency_ms(cell))
    assert NB201TableCost("params").measure(candidate) == pytest.approx(1.073466)
    with pytest.raises(ValueError, match="metric"):
        NB201TableCost("energy")
    darts = DartsGenotype.from_dict(load_genotype("DARTS_V2").to_dict())
    with pytest.raises(ValueError, match="got a 'darts'-space genotype"):
        NB201TableCost("latency").measure(Candidate(darts, space, (3, 32, 32)))


def test_one_hot_supernet_runs_only_the_chosen_operations():
    space = NB201Space(in_channels=1, channels=4, cells_per_stage=2)
    calls: list[str] = []
    for layer in space.layers:
        for edge in getattr(layer, "edges", []):
            for name, module in edge.items():
                module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
    cell = NB201Genotype.from_arch_str("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|")
    space(torch.randn(2, 1, 28, 28), space.arch_of(cell))
    assert sorted(set(calls)) == ["avg_pool_3x3", "nor_conv_3x3", "skip_connect"]
    assert len(calls) == 3 * 6  # 3 operations (node 2's pooling feeds nothing, but runs) x 6 cells
    assert space.derived_network(cell).genotype == cell


def test_grouped_pass_equals_separate_passes_and_phi_gets_gradients():
    torch.manual_seed(0)
    space = NB201Space(in_channels=1, channels=4, cells_per_stage=1)
    x1, x2 = torch.randn(3, 1, 28, 28), torch.randn(3, 1, 28, 28)
    z = space.distribution().sample()
    relaxed = {"cell": torch.softmax(torch.randn(6, 5), -1)}
    separate = torch.cat([space(x1, z), space(x2, relaxed)])
    rows = {"cell": torch.cat([z["cell"].expand(3, 6, 5), relaxed["cell"].expand(3, 6, 5)])}
    with batch_groups(2):
        grouped = space(torch.cat([x1, x2]), rows)
    torch.testing.assert_close(grouped, separate, atol=1e-5, rtol=1e-4)
    phi = space.arch["cell"]
    space(x1, {"cell": torch.softmax(phi, -1)}).sum().backward()
    assert phi.grad is not None and phi.grad.abs().sum() > 0


def test_bad_cells_stop_with_a_message():
    with pytest.raises(ValueError, match="unknown operation 'conv_5x5'"):
        NB201Genotype(ops=("conv_5x5", *NB201_OPS[:5]))
    with pytest.raises(ValueError, match=r"3 '\+'-separated node groups"):
        NB201Genotype.from_arch_str("|nor_conv_3x3~0|")
    with pytest.raises(ValueError, match=r"node 2 .* needs 2 inputs"):
        NB201Genotype.from_arch_str("|none~0|+|none~0|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="not 'op~i' with i < 1"):
        NB201Genotype.from_arch_str("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="table key"):
        NB201Genotype.from_table_key("555555")
    with pytest.raises(ValueError, match="needs 'arch'"):
        NB201Genotype.from_dict({"space": "nb201", "normal": []})
    with pytest.raises(ValueError, match="does not fit a NB201Space"):
        NB201Space(channels=4, cells_per_stage=1).arch_of(load_genotype("DARTS_V2"))
    assert isinstance(load_genotype("DARTS_V2"), DartsGenotype)


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_weight_sharing_search_to_benchmark_string_to_retrain(tmp_path):
    """configs/search/nb201_fmnist.yaml -> genotype.json (the benchmark's string) -> nb201_fmnist.yaml fit + test."""
    from unas_lightning.cli.app import UnasCLI

    def run_in(name):
        return [
            "--trainer.default_root_dir", str(tmp_path / name),
            "--data.init_args.max_train_examples", "512",
        ]  # fmt: skip

    search = [
        "fit", "--config", str(ROOT / "configs/search/nb201_fmnist.yaml"), *run_in("search"),
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
        "--model.init_args.warmup_epochs", "1", "--data.init_args.batch_size", "16",
        # GroundTruthReport (the last callback) as shipped but for training a cell outside the table's sample,
        # 2 x 40 s at the table's protocol (tests/analysis/test_fmnist201.py trains one with a tiny protocol)
        "--trainer.callbacks.init_args.train_missing", "false",
    ]  # fmt: skip
    UnasCLI(args=search)
    judged = json.loads(next((tmp_path / "search").rglob("ground_truth.json")).read_text())
    summary = json.loads(next((tmp_path / "search").rglob("summary.json")).read_text())
    assert summary["ground_truth"] == judged and judged["truth"] == "fmnist201"
    assert judged.get("missing") or 0 <= judged["percentile"] <= 100
    ranking = json.loads(next((tmp_path / "search").rglob("ranking.json")).read_text())  # RankingMonitor, as shipped
    (first,) = ranking["evaluations"]  # after the 1-epoch warm-up only
    assert ranking["truth"] == "fmnist201" and first["epoch"] == 1 and len(first["supernet"]) == len(first["truth"])
    table = FMNIST201Table(train_missing=False)
    assert 2 <= len(first["architectures"]) <= 50
    for arch, truth in zip(first["architectures"], first["truth"], strict=True):
        assert truth == pytest.approx(table.accuracy(NB201Genotype.from_dict(arch)))
    assert -1 <= first["kendall_tau"] <= 1 and 0 <= first["top_k_overlap"] <= 10 and first["accuracy_spread"] >= 0
    # the supernet and the table's parameter count as one ranker, weights SUPERNET_COUNT_WEIGHTS
    assert first["params"] == [table.params_m(NB201Genotype.from_dict(a)) for a in first["architectures"]]
    both = ranking_report(rank_average([first["supernet"], first["params"]], SUPERNET_COUNT_WEIGHTS), first["truth"])
    assert first["kendall_tau_with_count"] == pytest.approx(both["kendall_tau"])
    assert first["top_k_overlap_with_count"] == both["top_k_overlap"] and "kendall_tau_top20_with_count" in first
    path = next((tmp_path / "search").rglob("genotype.json"))
    cell = NB201Genotype.from_arch_str(json.loads(path.read_text())["arch"])
    assert load_genotype(path) == cell and cell.table_key() in NB201Table("cifar10").records
    retrain = [
        "--config", str(ROOT / "configs/retrain/nb201_fmnist.yaml"), *run_in("retrain"),
        "--model.init_args.genotype", str(path), "--model.init_args.channels", "4", "--model.init_args.layers", "1",
    ]  # fmt: skip
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"]
    cli = UnasCLI(args=["fit", *retrain, *short])
    assert cli.model.genotype == cell
    cli.trainer.limit_test_batches = 2
    result = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert 0.0 <= result["test/acc_top1"] <= 1.0


def test_search_table_keeps_to_its_budgets_and_random_search_to_its_latency(cifar10):
    from unas_lightning.estimators import IndeCateR, UnorderedSet
    from unas_lightning.search.tabular import random_search, search_table

    for estimator in [Reinforce(num_samples=4), UnorderedSet(num_samples=4), IndeCateR()]:
        points = search_table(cifar10, estimator, [30, 100], seed=0)
        assert sorted(points) == [30, 100]
        assert points[100].accuracy == pytest.approx(cifar10.accuracy(points[100].genotype))
    budget = float(cifar10.latencies_ms.median())
    point = random_search(cifar10, 50, seed=0, max_latency_ms=budget)
    assert point.latency_ms <= budget and point.accuracy == pytest.approx(cifar10.accuracy(point.genotype))
    with pytest.raises(ValueError, match="black-box estimator"):
        from unas_lightning.estimators import Rebar

        search_table(cifar10, Rebar(), 10)


def test_tabular_search_runs_from_the_cli_within_its_query_budget(tmp_path):
    from unas_lightning.cli.app import UnasCLI

    args = [
        "fit", "--config", str(ROOT / "configs/search/nb201_tabular.yaml"),
        "--model.init_args.queries", "60",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    cli = UnasCLI(args=args)
    assert cli.model.objective.queries == 50  # 2 steps of IndeCateR (25 queries each); a 3rd would exceed 60
    written = load_genotype(next(tmp_path.rglob("genotype.json")))
    assert written == cli.model.genotype()
    logged = cli.trainer.callback_metrics
    assert float(logged["table/accuracy"]) == pytest.approx(NB201Table("cifar10").accuracy(written), abs=1e-4)
    assert float(logged["table/queries"]) == 50


@pytest.mark.slow
def test_nb201_benchmark_quick_runs_end_to_end(tmp_path):
    """benchmarks/nb201.py --quick: every method and random search on CIFAR-10, the latency table, the plot."""
    nb201 = benchmark("nb201")
    nb201.main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    methods = results["datasets"]["cifar10"]["methods"]
    assert list(methods) == ["random", *nb201.estimators()]
    assert all(len(curve) == 2 for m in methods.values() for curve in m["curve"].values())  # 2 seeds
    assert set(results["latency"]) >= {"budget_ms", "relax4", "random"}
    assert (tmp_path / "nb201_queries.png").stat().st_size > 0
    assert "| random search |" in (tmp_path / "table.md").read_text()


def test_the_ranking_monitor_draws_connected_classes_of_a_nas_bench_201_table_with_their_accuracies(cifar10):
    """truth="cifar10": distinct isomorphism classes, all connected, the same set for the same seed, each with
    the table's accuracy; a space the table does not describe stops with the space's message."""
    from unas_lightning.callbacks import RankingMonitor
    from unas_lightning.estimators import Reinforce
    from unas_lightning.search.module import SearchModule
    from unas_lightning.spaces import DartsSpace

    module = SearchModule(NB201Space(channels=4, cells_per_stage=1), estimator=Reinforce())
    cells, truths = RankingMonitor(truth="cifar10", cells=40, seed=3).architectures(module)
    assert len(cells) == 40 and len({g.unique_key() for g in cells}) == 40 and all(g.connected() for g in cells)
    assert truths == [pytest.approx(cifar10.accuracy(g)) for g in cells]
    assert RankingMonitor(truth="cifar10", cells=40, seed=3).architectures(module)[0] == cells
    darts = SearchModule(DartsSpace(channels=4, layers=3), estimator=Reinforce())
    with pytest.raises(ValueError, match="'nb201'-space genotype does not fit a DartsSpace"):
        RankingMonitor(truth="cifar10", cells=4).architectures(darts)
