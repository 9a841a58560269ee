"""Searches judged by ground truth: every estimator and objective in the NAS-Bench-201 space on Fashion-MNIST.

    python benchmarks/search_quality.py                          # every method, 5 seeds (hours on 2 CPU cores)
    python benchmarks/search_quality.py --methods unas_gen,darts1 --seeds 5
    python benchmarks/search_quality.py --quick                  # a smoke run (the test suite runs it)
    python benchmarks/search_quality.py --report-only --out DIR  # the tables from the runs in DIR so far

Every method is ``benchmarks/search_quality_nb201.yaml`` (``configs/search/nb201_fmnist.yaml`` as the study's
runs used it, kept apart from the shipped config: the NAS-Bench-201 supernet, C=8, on Fashion-MNIST) through
the public CLI class (``UnasCLI``, what ``unas-cli fit`` runs) with the overrides below, one run per seed, the
same supernet budget for all (5 epochs of 468 steps, 3 of them warm-up, each method's warm-up on its own
w-step unless it names another; ``unas_gen_long`` gets 13). The
cell each derives is read off the FMNIST-201 table (``GroundTruthReport``; a cell outside the table's
sample is trained with the table's protocol and both seeds, once, and cached in ``--out``): its test
accuracy trained alone, its percentile among the table's cells, its regret against the table's best,
whether it collapsed to a parameter-free cell (no convolution), and its NAS-Bench-201 CIFAR-10 accuracy
(does the search transfer?). Three baselines need no gradient:

* ``rsps``: random sampling with parameter sharing (Li & Talwalkar 2019): the supernet trained for the
  same budget with phi held uniform, then the best of ``--rsps-cells`` uniformly drawn cells by their
  supernet accuracy (shared weights, on 32 search-val batches);
* ``params``: the same ``--rsps-cells`` candidates ranked by their parameter count instead (a zero-cost
  ranker: no training at all), the largest taken: does the supernet rank better than a count?
* ``rsps_count``: the same candidates and supernet, ranked by the supernet's accuracy and the parameter
  count combined (``analysis.ranking.rank_average``, weights 1:3, the ranking study's best); it reads the
  supernet accuracies the ``rsps`` run of its seed saved (``candidates.json``) or, without one, trains
  that supernet itself;
* ``rsps_deiso``, ``rsps_deiso_count``: the same two on a supernet warmed up de-isomorphically (the
  ``deisomorphic`` warm-up): does a supernet that ranks better pick better?
* ``random_equal``: random search at equal compute: as many cells as the CPU time the ``unas_gen``
  search consumed (``search_cpu_s``: processor seconds summed over its threads, so neither other jobs
  on the machine nor the thread count change it) would have trained alone, at the table's median
  training cost per cell (its wall time on one thread, times the threads per training), drawn from the
  table's uniform sample; the best by one seed's validation accuracy is the result. On a GPU, where
  processor time does not measure the work, compare wall times instead.

Per comparison the docs make, an exact one-sided permutation test over the seeds (is A's mean test
accuracy above B's?) gives the p-value. Each run is saved as it ends (``runs.jsonl`` in ``--out``); a
rerun with the same ``--out`` skips the runs already there. Writes ``table.md`` and ``results.png``
(every seed a point over the table's distribution) and prints the table.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: the study's protocol, frozen: the shipped configs/search/nb201_fmnist.yaml may change with the results
CONFIG = ROOT / "benchmarks" / "search_quality_nb201.yaml"
EST = "--model.init_args.estimator"
METHODS: dict[str, tuple[str, list[str]]] = {
    "unas_gen": ("UNAS: REBAR on L_gen (the study's config, warmed up on the search's own w-step)", []),
    "unas_val": ("UNAS: REBAR on L_val", ["--model.init_args.objective", "val"]),
    "unas_train": ("UNAS: REBAR on L_train", ["--model.init_args.objective", "train"]),
    "relax": ("RELAX on L_gen", [EST, "unas_lightning.estimators.Relax"]),
    "rloo": (
        "REINFORCE, 4 samples, leave-one-out baseline",
        [EST, "unas_lightning.estimators.Reinforce", f"{EST}.init_args.num_samples", "4"],
    ),
    "indecater": ("IndeCateR", [EST, "unas_lightning.estimators.IndeCateR"]),
    "unordered_set": ("unordered set, 4 distinct cells", [EST, "unas_lightning.estimators.UnorderedSet"]),
    "snas": (
        "Gumbel-softmax (SNAS): configs/search/nb201_fmnist.yaml's search since the sixth session",
        [EST, "unas_lightning.estimators.GumbelSoftmax", "--model.init_args.w_step_arch", "relaxed"],
    ),
    "gdas": ("straight-through Gumbel (GDAS-like)", [EST, "unas_lightning.estimators.StraightThroughGumbel"]),
    "reinmax": ("ReinMax", [EST, "unas_lightning.estimators.ReinMax"]),
    "darts1": (
        "DARTS, first order",
        [
            EST,
            "unas_lightning.estimators.Softmax",
            "--model.init_args.objective",
            "val",
            "--model.init_args.w_step_arch",
            "softmax",
        ],
    ),
    "darts2": (
        "DARTS, second order (xi = the w learning rate)",
        [
            EST,
            "unas_lightning.estimators.DartsSecondOrder",
            f"{EST}.init_args.xi",
            "0.003",
            "--model.init_args.objective",
            "val",
            "--model.init_args.w_step_arch",
            "softmax",
        ],
    ),
    "rsps": ("random sampling with parameter sharing", ["--model.init_args.warmup_epochs", "1000"]),
    "rsps_count": (
        "rsps's candidates by supernet accuracy and parameter count, 1:3",
        ["--model.init_args.warmup_epochs", "1000"],
    ),
    "rsps_deiso": (
        "rsps on a supernet trained de-isomorphically",
        ["--model.init_args.warmup_epochs", "1000", "--model.init_args.warmup_w_step_arch", "deisomorphic"],
    ),
    "rsps_deiso_count": (
        "rsps_deiso's candidates by supernet accuracy and parameter count, 1:3",
        ["--model.init_args.warmup_epochs", "1000", "--model.init_args.warmup_w_step_arch", "deisomorphic"],
    ),
    "unas_gen_wd": (
        "UNAS on L_gen, supernet with weight decay 5e-4 (ranked better in the ranking study)",
        ["--model.init_args.w_optimizer.init_args.weight_decay", "5e-4"],
    ),
    "unas_gen_deiso": (
        "UNAS on L_gen, warm-up with de-isomorphic sampling (every distinct cell equally often)",
        ["--model.init_args.warmup_w_step_arch", "deisomorphic"],
    ),
    "unas_gen_lr": (
        "UNAS on L_gen, phi's Adam learning rate 0.05 instead of 0.01 (p_phi stays near uniform at 0.01)",
        ["--model.init_args.phi_optimizer.init_args.lr", "0.05"],
    ),
    "unas_gen_long": (
        "UNAS on L_gen at SNAS's CPU time: 8 warm-up + 5 search epochs instead of 3 + 2 (13 in all)",
        ["--trainer.max_epochs", "13", "--model.init_args.warmup_epochs", "8"],
    ),
}
BASELINE = "random_equal"
#: a zero-cost ranker (no training, no supernet) over the candidates rsps ranks
PARAMS = "params"
#: every method, in the order the table lists them (the baselines without a search last)
ALL_METHODS = [*METHODS, PARAMS, BASELINE]
#: the comparisons the docs state, as (A, B): is A better than B?
COMPARISONS = [
    ("unas_gen", "unas_val"), ("unas_gen", "unas_train"), ("unas_gen", "darts1"), ("unas_gen", "darts2"),
    ("snas", "unas_gen"),
    ("unas_gen", "rsps"), ("unas_gen", BASELINE), ("unas_gen_wd", "unas_gen"), ("unas_gen_lr", "unas_gen"),
    ("unas_gen_lr", BASELINE), ("unas_gen", PARAMS), (PARAMS, "rsps"), ("unas_gen", "gdas"),
    ("rloo", "unas_gen"), ("rloo", BASELINE), ("rloo", "rsps"), ("rsps_count", "rsps"), ("rsps_count", PARAMS),
    ("unas_gen_deiso", "unas_gen"), ("rsps_deiso", "rsps"), ("rsps_deiso_count", "rsps_count"),
    ("snas", "unas_gen_long"), ("unas_gen_long", "unas_gen"), ("snas", "unas_gen_deiso"),
]  # fmt: skip
#: the file in a ``rsps`` run folder with its candidates' supernet accuracies (what ``rsps_count`` re-ranks)
CANDIDATES = "candidates.json"
#: the methods that re-rank another's candidates with the count, and that method (both rank shared weights)
COUNT_OF = {"rsps_count": "rsps", "rsps_deiso_count": "rsps_deiso"}
SHARED_WEIGHT_PICKS = {*COUNT_OF, *COUNT_OF.values()}
PARAMETER_FREE = {"none", "skip_connect", "avg_pool_3x3"}


def _cli(args: list[str]) -> Any:
    """``unas-cli ARGS`` in this process (the benchmark's own command line hidden from LightningCLI)."""
    from unas_lightning.cli.app import UnasCLI

    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return UnasCLI(args=args)
    finally:
        sys.argv = argv


def search(method: str, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One search through the CLI: the derived cell (or, for ``SHARED_WEIGHT_PICKS``, the pick among the
    candidates) and its wall and CPU time."""
    if method in COUNT_OF and (out / "runs" / f"{COUNT_OF[method]}_{seed}" / CANDIDATES).is_file():
        return count_pick(method, seed, out / "runs" / f"{COUNT_OF[method]}_{seed}")  # its supernet, re-ranked
    name = f"{method}_{seed}"
    t0, cpu0 = time.perf_counter(), time.process_time()
    cli = _cli(
        [
            "fit", "--config", str(CONFIG), *args.budget, *METHODS[method][1],
            "--seed_everything", str(seed),
            "--trainer.default_root_dir", str(out / "runs" / name), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.callbacks.init_args.train_missing", "false",  # judged below, outside the search's time
        ]
    )  # fmt: skip
    run = {"method": method, "seed": seed, "entropy": float(cli.model.space.distribution().entropy())}
    if method not in SHARED_WEIGHT_PICKS:
        cell = cli.model.space.genotype()
        return {**run, "arch": cell.to_arch_str(), "search_s": time.perf_counter() - t0,
                "search_cpu_s": time.process_time() - cpu0}  # fmt: skip
    scores = supernet_scores(cli, args.rsps_cells, seed)
    run.update(search_s=time.perf_counter() - t0, search_cpu_s=time.process_time() - cpu0)
    (out / "runs" / name / CANDIDATES).write_text(json.dumps({**run, "candidates": scores}))
    if method in COUNT_OF:
        return count_pick(method, seed, out / "runs" / name)
    return {**run, "arch": max(scores, key=lambda c: c["supernet"])["arch"]}


def candidates(space: Any, cells: int, seed: int) -> list[Any]:
    """The ``cells`` cells that ``rsps`` and ``params`` rank for ``seed``: drawn from the space's p_phi (uniform:
    neither moves phi) with a generator of their own, so both rank the same cells."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [space.genotype(space.distribution().sample(generator=generator)) for _ in range(cells)]


def supernet_scores(cli: Any, cells: int, seed: int) -> list[dict[str, Any]]:
    """The supernet accuracy (shared weights, 32 search-val batches) of each of the ``cells`` candidates of
    ``seed``, as ``{"arch": ..., "supernet": ...}`` in the order drawn."""
    from unas_lightning.analysis.ranking import supernet_accuracy

    space = cli.model.space
    batches = list(itertools.islice(iter(cli.datamodule.val_dataloader()), 32))
    return [{"arch": g.to_arch_str(), "supernet": supernet_accuracy(space, g, batches)}
            for g in candidates(space, cells, seed)]  # fmt: skip


def count_pick(method: str, seed: int, folder: Path) -> dict[str, Any]:
    """``rsps_count``, ``rsps_deiso_count``: the candidates a supernet scored (``CANDIDATES`` in ``folder``),
    ranked by the rank average of supernet accuracy and parameter count (``SUPERNET_COUNT_WEIGHTS``, the first
    taken on a tie); the search time is that supernet's."""
    from unas_lightning.analysis.fmnist201 import FMNIST201Table
    from unas_lightning.analysis.ranking import SUPERNET_COUNT_WEIGHTS, rank_average
    from unas_lightning.spaces.nb201.genotype import NB201Genotype

    saved = json.loads((folder / CANDIDATES).read_text())
    scored = saved.pop("candidates")
    size = FMNIST201Table(train_missing=False).params_m
    params = [size(NB201Genotype.from_arch_str(c["arch"])) for c in scored]
    score = rank_average([[c["supernet"] for c in scored], params], SUPERNET_COUNT_WEIGHTS)
    best = max(range(len(scored)), key=lambda i: score[i])
    return {**saved, "method": method, "seed": seed, "arch": scored[best]["arch"]}


def params_pick(seed: int, cells: int, args: argparse.Namespace) -> dict[str, Any]:
    """The cell with the most parameters (the table protocol's network; the first drawn on a tie) of the
    ``cells`` uniformly drawn cells that ``rsps`` ranks with the supernet for the same seed: the same
    candidates, ranked by a count instead of by shared weights."""
    from unas_lightning.analysis.fmnist201 import FMNIST201Table
    from unas_lightning.spaces import NB201Space

    t0, cpu0 = time.perf_counter(), time.process_time()
    space = NB201Space(in_channels=1, num_classes=10, channels=8, cells_per_stage=1)  # phi uniform, as rsps's
    best = max(candidates(space, cells, seed), key=FMNIST201Table(args.table, train_missing=False).params_m)
    return {
        "method": PARAMS,
        "seed": seed,
        "arch": best.to_arch_str(),
        "search_s": time.perf_counter() - t0,
        "search_cpu_s": time.process_time() - cpu0,
    }


@functools.cache
def _random_search_pool(table_path: str | None) -> tuple[list[dict[str, Any]], float, int]:
    """What random search draws from: the table's uniform sample, the median wall time of one of its
    trainings and the threads each training ran on (from the table's hardware line). Read once per process
    and table (the report asks for it once per method); read-only to its callers."""
    from unas_lightning.analysis.fmnist201 import FMNIST201Table

    table = FMNIST201Table(table_path, train_missing=False)
    uniform = [r for k, r in sorted(table.records.items()) if k in table.shipped and r.get("source") == "uniform"]
    per_cell = statistics.median(s for r in uniform for s in r["train_seconds"])
    found = re.search(r"x (\d+) thread", table.meta.get("hardware", ""))
    return uniform, per_cell, int(found.group(1)) if found else 1


def _cells_bought(cpu_seconds: float, pool: list[dict[str, Any]], per_cell: float, threads: int) -> int:
    """How many of the table's trainings ``cpu_seconds`` of processor time pays for (at least one)."""
    return max(1, min(len(pool), round(cpu_seconds / (per_cell * threads))))


def random_equal(seed: int, cpu_seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    """Random search at equal compute: the best (one seed's validation accuracy) of as many table cells as
    ``cpu_seconds`` of processor time would have trained alone."""
    import torch

    uniform, per_cell, threads = _random_search_pool(args.table)
    k = _cells_bought(cpu_seconds, uniform, per_cell, threads)
    order = torch.randperm(len(uniform), generator=torch.Generator().manual_seed(10_000 + seed)).tolist()
    best = max((uniform[i] for i in order[:k]), key=lambda r: r["val_acc"][0])
    return {
        "method": BASELINE,
        "seed": seed,
        "arch": best["arch"],
        "search_s": k * per_cell,
        "search_cpu_s": k * per_cell * threads,
        "cells_trained": k,
    }


def random_search_expectation(cpu_seconds: float, table_path: str | None = None) -> tuple[int, float]:
    """Random search at ``cpu_seconds`` of processor time, in expectation instead of one draw: the number of
    table trainings k that time buys (as ``random_equal`` counts it) and the mean test accuracy of the best
    of k cells drawn without replacement from the table's uniform sample (best by one seed's validation
    accuracy), computed exactly: the i-th best of N is the pick with probability C(N-1-i, k-1) / C(N, k).

    Examples:
        >>> k, accuracy = random_search_expectation(1e9)  # more than the whole sample: its best by validation
        >>> k > 200 and 80 < accuracy < 100
        True
    """
    from math import comb

    uniform, per_cell, threads = _random_search_pool(table_path)
    k = _cells_bought(cpu_seconds, uniform, per_cell, threads)
    ranked = sorted(uniform, key=lambda r: r["val_acc"][0], reverse=True)
    n = len(ranked)
    chance = [comb(n - 1 - i, k - 1) / comb(n, k) for i in range(n)]
    return k, sum(p * statistics.fmean(r["test_acc"]) for p, r in zip(chance, ranked, strict=True))


def judge(run: dict[str, Any], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The run's cell read off FMNIST-201 (trained on demand outside the sample) and NAS-Bench-201 CIFAR-10."""
    from unas_lightning.callbacks import GroundTruthReport
    from unas_lightning.spaces.nb201.genotype import NB201Genotype

    cell = NB201Genotype.from_arch_str(run["arch"])
    report = GroundTruthReport(train_missing=not args.no_training, table_path=args.table).judge(cell, out)
    figures = {k: report[k] for k in ("accuracy", "percentile", "regret", "table_best") if k in report}
    return {
        **run,
        **figures,
        "missing": bool(report.get("missing")),
        "collapsed": all(op in PARAMETER_FREE for op in cell.ops),
        "cifar10": _cifar10().accuracy(cell),
    }


@functools.cache
def _cifar10() -> Any:
    from unas_lightning.spaces.nb201.table import NB201Table

    return NB201Table("cifar10")


def permutation_p(a: list[float], b: list[float]) -> float:
    """Exact one-sided permutation test: the share of relabelings of a + b whose mean difference is at
    least the observed one (small samples: every split is enumerated).

    Examples:
        >>> permutation_p([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])  # the observed split is the most extreme of 20
        0.05
    """
    pooled, n = a + b, len(a)
    observed = statistics.fmean(a) - statistics.fmean(b)
    hits = total = 0
    for chosen in itertools.combinations(range(len(pooled)), n):
        rest = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        diff = statistics.fmean(pooled[i] for i in chosen) - statistics.fmean(rest)
        hits += diff >= observed - 1e-12
        total += 1
    return hits / total


def _methods(runs: list[dict[str, Any]]) -> list[str]:
    """The methods of these runs in the order of ``ALL_METHODS``, whatever order they ran in."""
    n = len(ALL_METHODS)
    return sorted({r["method"] for r in runs}, key=lambda m: ALL_METHODS.index(m) if m in ALL_METHODS else n)


def tables(runs: list[dict[str, Any]], table_path: str | None = None) -> str:
    """The per-method table (each method's runs; beside its mean CPU time, what random search would find in
    expectation with that much) and the permutation test of each comparison in ``COMPARISONS``."""
    by_method: dict[str, list[dict[str, Any]]] = {m: [] for m in _methods(runs)}
    for r in runs:
        by_method[r["method"]].append(r)
    rows = [
        "| method | seeds | test acc % (mean ± std) | every seed | percentile | regret | collapsed | "
        "CIFAR-10 % | p_phi entropy | search s | search CPU s | random search at that CPU time (cells) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, mine in by_method.items():
        judged = [r for r in mine if not r["missing"]]
        cpu = [r["search_cpu_s"] for r in mine if "search_cpu_s" in r]
        acc = [r["accuracy"] for r in judged]
        spread = f"{statistics.fmean(acc):.2f} ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else _f(acc)
        every = ", ".join(f"{a:.2f}" for a in acc) + (
            f" ({len(mine) - len(judged)} not judged)" if len(judged) < len(mine) else ""
        )
        rows.append(
            f"| {method} | {len(mine)} | {spread} | {every} | {_f([r['percentile'] for r in judged], 1)} | "
            f"{_f([r['regret'] for r in judged])} | {sum(r['collapsed'] for r in mine)}/{len(mine)} | "
            f"{_f([r['cifar10'] for r in mine])} | {_f([r['entropy'] for r in mine if 'entropy' in r])} | "
            f"{statistics.fmean(r['search_s'] for r in mine):.0f} | "
            f"{_f(cpu, 0)} | {_random_column(statistics.fmean(cpu), table_path) if cpu else '-'} |"
        )
    tests = []
    for a, b in COMPARISONS:
        xa = [r["accuracy"] for r in by_method.get(a, []) if not r["missing"]]
        xb = [r["accuracy"] for r in by_method.get(b, []) if not r["missing"]]
        if len(xa) >= 2 and len(xb) >= 2:
            tests.append(
                f"| {a} > {b} | {statistics.fmean(xa) - statistics.fmean(xb):+.2f} | {permutation_p(xa, xb):.3f} |"
            )
    if tests:
        rows += ["", "| comparison | mean difference (points) | p (exact permutation, one-sided) |", "|---|---|---|"]
        rows += tests
    return "\n".join(rows)


def _random_column(cpu_seconds: float, table_path: str | None) -> str:
    k, accuracy = random_search_expectation(cpu_seconds, table_path)
    return f"{accuracy:.2f} ({k})"


def _entropy_of_run_folder(folder: Path) -> dict[str, float]:
    """``{"entropy": H}`` from the newest ``summary.json`` the search wrote in ``folder`` (none: ``{}``)."""
    summaries = sorted(folder.glob("*/version_*/summary.json"), key=lambda p: p.stat().st_mtime)
    return {"entropy": json.loads(summaries[-1].read_text())["entropy"]} if summaries else {}


def _warmup_of(run: Path) -> str | None:
    """How the run in version folder ``run`` warmed up, read from the config.yaml the CLI saved there:
    "uniform one-hot" or "de-isomorphic"; None for a relaxed or softmax warm-up (the search's own w-step)."""
    import yaml

    model = yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]
    arch = model.get("warmup_w_step_arch") or model.get("w_step_arch")
    return {"discrete": "uniform one-hot", "deisomorphic": "de-isomorphic"}.get(arch)


@functools.cache
def _study_warmup_epochs() -> int:
    """The study config's warm-up epochs (``warmup_rankings`` names a longer one)."""
    import yaml

    return int(yaml.safe_load(CONFIG.read_text())["model"]["init_args"]["warmup_epochs"])


def warmup_rankings(out: Path, table_path: str | None = None) -> str:
    """Why the searches find what they find: the supernet's ranking at the end of the one-hot warm-up (the
    cells each run's ``RankingMonitor`` evaluated, ``ranking.json`` in its run folder; runs with the same
    warm-up counted once, runs that warm up with a relaxed or softmax w-step left out) against the parameter
    count's on the same cells: a sentence for the uniform one-hot warm-up, one for the de-isomorphic warm-up
    where runs used it, and one for each longer warm-up (``unas_gen_long``'s 8 epochs) than the study's 3."""
    from unas_lightning.analysis.fmnist201 import FMNIST201Table
    from unas_lightning.analysis.ranking import SUPERNET_COUNT_WEIGHTS, ranking_report, with_count_report
    from unas_lightning.spaces.nb201.genotype import NB201Genotype

    size = FMNIST201Table(table_path, train_missing=False).params_m
    seen: set[str] = set()
    # (warm-up, its epochs if not the study's 3) -> figure -> one value per distinct warm-up
    figures: dict[tuple[str, int | None], dict[str, list[float]]] = {}
    for path in sorted(out.glob("runs/*/*/version_*/ranking.json")):
        warmup = _warmup_of(path.parent) if (path.parent / "config.yaml").is_file() else None
        evaluations = json.loads(path.read_text()).get("evaluations") or [{}]
        first = evaluations[0]
        key = json.dumps([first.get("architectures"), first.get("supernet")])
        if warmup is None or "supernet" not in first or key in seen:
            continue
        seen.add(key)
        # ranking.json records the counts since the monitor computes them; older files: from the table
        params = first.get("params") or [size(NB201Genotype.from_arch_str(a["arch"])) for a in first["architectures"]]
        values = {
            "supernet": ranking_report(first["supernet"], first["truth"])["kendall_tau"],
            "count": ranking_report(params, first["truth"])["kendall_tau"],
            "agree": ranking_report(first["supernet"], params)["kendall_tau"],
            "both": with_count_report(first["supernet"], params, first["truth"])["kendall_tau_with_count"],
        }
        epochs = first.get("epoch") if first.get("epoch") not in (None, _study_warmup_epochs()) else None
        for name, value in values.items():
            figures.setdefault((warmup, epochs), {}).setdefault(name, []).append(value)

    def ms(x: list[float]) -> str:
        return f"{statistics.fmean(x):.2f} +- {statistics.stdev(x):.2f}"

    weights = f"{SUPERNET_COUNT_WEIGHTS[0]:g}:{SUPERNET_COUNT_WEIGHTS[1]:g}"
    lines = []
    order = {"uniform one-hot": 0, "de-isomorphic": 1}
    for warmup, epochs in sorted(figures, key=lambda k: (k[1] or 0, order[k[0]])):
        f = figures[(warmup, epochs)]
        if len(f["supernet"]) < 2:
            continue
        what = "At the end of the warm-up" if warmup == "uniform one-hot" else "At the end of the de-isomorphic warm-up"
        what = what.replace("warm-up", f"{epochs}-epoch warm-up") if epochs else what
        lines.append(
            f"{what} ({len(f['supernet'])} distinct warm-ups, the cells each RankingMonitor evaluated): the supernet "
            f"ranks them at Kendall tau {ms(f['supernet'])}, their parameter count at {ms(f['count'])}; the two "
            f"orders agree at {ms(f['agree'])}; their rank average (supernet : count {weights}) ranks them at "
            f"{ms(f['both'])}."
        )
    return "\n".join(lines)


def _f(values: list[float], digits: int = 2) -> str:
    return f"{statistics.fmean(values):.{digits}f}" if values else "-"


def plot(runs: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unas_lightning.analysis.fmnist201 import FMNIST201Table

    table = FMNIST201Table(args.table, train_missing=False)
    background = [statistics.fmean(table.records[k]["test_acc"]) for k in table.shipped]
    methods = _methods(runs)
    fig, ax = plt.subplots(figsize=(1.0 * len(methods) + 3, 4))
    ax.violinplot([background], positions=[-1], showextrema=False)
    for i, m in enumerate(methods):
        accs = [r["accuracy"] for r in runs if r["method"] == m and not r["missing"]]
        ax.scatter([i + 0.06 * (j - (len(accs) - 1) / 2) for j in range(len(accs))], accs, s=16, zorder=3)
    ax.set_xticks([-1, *range(len(methods))], ["table", *methods], rotation=30, ha="right")
    ax.set_ylabel("FMNIST-201 test accuracy (%)")
    ax.set_title("Found cells by method (every seed), over the table's cells", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--methods", default=",".join(ALL_METHODS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-list", default=None, help="these seeds only, e.g. 0,2,4 (two processes side by side)")
    parser.add_argument(
        "--rsps-cells", type=int, default=100, help="rsps, params: uniformly drawn cells ranked (supernet, count)"
    )
    parser.add_argument("--table", default=None, help="the FMNIST-201 table (default: the one shipped)")
    parser.add_argument("--no-training", action="store_true", help="report cells outside the table as not judged")
    parser.add_argument("--out", default="runs/search_quality", help="runs.jsonl, the cells trained on demand, tables")
    parser.add_argument("--report-only", action="store_true", help="only the tables of the runs in --out")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: unas_gen, rsps, rsps_count, params, random_equal, 1 seed"
    )
    args = parser.parse_args(argv)
    args.budget = []  # the study config's own budget; --quick shrinks it
    if args.quick:
        args.methods, args.seeds, args.rsps_cells, args.no_training = (
            f"unas_gen,rsps,rsps_count,{PARAMS},{BASELINE}",
            1,
            4,
            True,
        )
        args.budget = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3",
                       "--trainer.limit_val_batches", "1", "--model.init_args.warmup_epochs", "1",
                       "--data.init_args.max_train_examples", "512", "--data.init_args.batch_size", "16"]  # fmt: skip
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {ALL_METHODS}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    runs = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    for r in runs:
        if "entropy" not in r:  # runs logged before the entropy was: their search's summary.json, if kept
            r.update(_entropy_of_run_folder(out / "runs" / f"{r['method']}_{r['seed']}"))
    done = {(r["method"], r["seed"]) for r in runs}
    if not args.report_only:
        import lightning as L

        L.pytorch.utilities.disable_possible_user_warnings()
        seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else range(args.seeds)
        for seed in seeds:
            for method in methods:
                if (method, seed) in done:
                    continue
                if method == BASELINE:  # the unas_gen search of this seed sets the compute
                    gen = [r for r in runs if r["method"] == "unas_gen" and r["seed"] == seed and "search_cpu_s" in r]
                    if not gen:
                        print(f"{BASELINE} seed {seed}: needs the unas_gen run of that seed", file=sys.stderr)
                        continue
                    run = random_equal(seed, gen[0]["search_cpu_s"], args)
                elif method == PARAMS:
                    run = params_pick(seed, args.rsps_cells, args)
                else:
                    run = search(method, seed, args, out)
                run = judge(run, args, out)
                runs.append(run)
                with open(log, "a") as f:
                    f.write(json.dumps(run) + "\n")
                got = "not judged" if run["missing"] else f"{run['accuracy']:.2f}% (percentile {run['percentile']:.0f})"
                print(f"{method} seed {seed}: {got}, {run['search_s']:.0f} s", file=sys.stderr)
    text = tables(runs, args.table)
    why = warmup_rankings(out, args.table)
    text += f"\n\n{why}" if why else ""
    (out / "table.md").write_text(text + "\n")
    if runs:
        plot(runs, args, out / "results.png")
    print(f"`python benchmarks/search_quality.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    print(text)
    print(f"\noutputs: {out}")
    return runs


if __name__ == "__main__":
    main()
