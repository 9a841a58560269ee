"""Estimators as black-box searchers on the NAS-Bench-201 tables, against random search.

    python benchmarks/nb201.py            # every estimator, 20 seeds, CIFAR-10 / CIFAR-100 / ImageNet16-120
    python benchmarks/nb201.py --quick    # a smoke run (seconds)

Each search optimizes phi over the 15,625 cells with one estimator, the loss of a sampled cell being its
error after full training for one training seed drawn at random (``TableObjective``: a noisy reward),
and is judged by the *true* (seed-averaged) accuracy of its most probable cell after 100, 300 and 1000
table queries, and by the regret to the table's optimum. Random search draws as many cells uniformly and
keeps the one with the best observed (noisy) accuracy. The learning rate of phi is chosen once, on
CIFAR-10 at 300 queries, from ``--lrs``, per estimator; CIFAR-100 and ImageNet16-120 reuse it untouched.
A last table puts a latency budget (the table's median latency) on the search: RELAX and RLOO on the error
plus a hinge on the table's latency, against random search among the cells within the budget.

Writes ``results.json``, ``table.md`` and ``nb201_queries.png`` (true accuracy against queries,
CIFAR-10, mean and std over seeds) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = ("cifar10", "cifar100", "imagenet16-120")


def estimators() -> dict:
    """name -> (factory, description); each factory builds a fresh estimator (learned state reset)."""
    from unas_lightning.estimators import IndeCateR, Reinforce, Relax, UnorderedSet

    return {
        "reinforce": (lambda: Reinforce(), "REINFORCE, EMA baseline (decay 0.9), 1 sample/step"),
        "rloo4": (lambda: Reinforce(num_samples=4), "REINFORCE, 4 samples, leave-one-out baselines (RLOO)"),
        "relax4": (lambda: Relax(num_samples=4), "RELAX, linear surrogate g fitted online, 4 samples"),
        "indecater": (lambda: IndeCateR(), "IndeCateR, every op of each edge (25 queries/step)"),
        "unordered4": (lambda: UnorderedSet(num_samples=4), "unordered set, 4 distinct cells, built-in baseline"),
    }


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def run(args) -> dict:
    import torch

    from unas_lightning.search.tabular import random_search, search_table
    from unas_lightning.spaces.nb201.table import NB201Table

    torch.set_num_threads(1)
    found = estimators()
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in found]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {list(found)}")
    budgets = sorted(int(b) for b in args.budgets.split(","))
    curve = sorted({*budgets, *(int(b) for b in args.curve.split(","))})
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = range(args.seeds)
    results: dict = {"args": vars(args), "lr": {}, "datasets": {}, "latency": {}}

    # 1. the learning rate of each estimator, chosen once on CIFAR-10 at the tuning budget
    tune = NB201Table("cifar10")
    for m in methods:
        scores = {}
        for lr in lrs:
            accs = [search_table(tune, found[m][0](), args.tune_budget, seed=1000 + s, lr=lr) for s in seeds]
            scores[lr] = statistics.mean(a[args.tune_budget].accuracy for a in accs)
        results["lr"][m] = {"chosen": max(scores, key=scores.get), "scores": scores}
        print(f"lr for {m}: {results['lr'][m]['chosen']} ({scores})", file=sys.stderr)

    # 2. every method on every data set, seeds disjoint from the tuning seeds
    for ds in args.datasets.split(","):
        table = NB201Table(ds)
        optimum = table.best()[1]
        rows: dict = {"optimum": optimum, "methods": {}}
        random = {q: [random_search(table, q, seed=s).accuracy for s in seeds] for q in curve}
        rows["methods"]["random"] = {"curve": random, "seconds": 0.0}
        for m in methods:
            t0 = time.perf_counter()
            lr = results["lr"][m]["chosen"]
            runs = [search_table(table, found[m][0](), curve, seed=s, lr=lr) for s in seeds]
            rows["methods"][m] = {
                "curve": {q: [r[q].accuracy for r in runs] for q in curve},
                "seconds": (time.perf_counter() - t0) / len(runs),
                "lr": lr,
            }
        results["datasets"][ds] = rows
        print(f"{ds} done", file=sys.stderr)

    # 3. a latency budget: RELAX and RLOO on error + hinge vs random search within the budget (CIFAR-10)
    hinged = [m for m in ("relax4", "rloo4") if m in methods]
    if hinged and args.latency:
        table = NB201Table("cifar10")
        budget = float(table.latencies_ms.median())
        q = args.tune_budget
        searched = {
            m: [
                search_table(
                    table, found[m][0](), q, seed=s, lr=results["lr"][m]["chosen"], max_latency_ms=budget,
                    latency_weight=args.latency_weight,
                )[q]
                for s in seeds
            ]
            for m in hinged
        }  # fmt: skip
        rand = [random_search(table, q, seed=s, max_latency_ms=budget) for s in seeds]
        results["latency"] = {
            "budget_ms": budget,
            "weight": args.latency_weight,
            "queries": q,
            "optimum": table.best(budget)[1],
            **{m: [p.to_dict() for p in points] for m, points in searched.items()},
            "random": [p.to_dict() for p in rand],
        }
    return results


def tables(results: dict) -> str:
    found = estimators()
    budgets = sorted(int(b) for b in results["args"]["budgets"].split(","))
    out = []
    for ds, rows in results["datasets"].items():
        out.append(
            f"**{ds}** (true accuracy % of the most probable cell, mean ± std over {results['args']['seeds']} seeds; "
            f"optimum {rows['optimum']:.2f}%)\n"
        )
        out.append("| method | lr | " + " | ".join(f"{q} queries" for q in budgets) + " | regret at 300 | s per run |")
        out.append("|---|---|" + "---|" * len(budgets) + "---|---|")
        for m, r in rows["methods"].items():
            curve = {int(k): v for k, v in r["curve"].items()}
            cells = " | ".join(_mean_std(curve[q]) for q in budgets)
            regret = f"{rows['optimum'] - statistics.mean(curve[300]):.2f}" if 300 in curve else "-"
            name = "random search" if m == "random" else f"{m}: {found[m][1]}"
            lr = "-" if m == "random" else f"{r['lr']:g}"
            out.append(f"| {name} | {lr} | {cells} | {regret} | {r['seconds']:.2f} |")
        out.append("")
    lat = results.get("latency")
    if lat:
        out.append(
            f"**Latency budget {lat['budget_ms']:.2f} ms** (the table's median, CIFAR-10, {lat['queries']} queries; "
            f"best cell within it {lat['optimum']:.2f}%)\n"
        )
        out.append("| method | true accuracy % | latency ms (mean) | within budget |")
        out.append("|---|---|---|---|")
        names = {
            "relax4": "RELAX (4 samples), error + latency hinge",
            "rloo4": "RLOO (4 samples), error + latency hinge",
            "random": "random search within the budget",
        }
        for m in [m for m in names if m in lat]:
            pts = lat[m]
            within = sum(p["latency_ms"] <= lat["budget_ms"] for p in pts)
            name = names[m]
            out.append(
                f"| {name} | {_mean_std([p['accuracy'] for p in pts])} | "
                f"{statistics.mean(p['latency_ms'] for p in pts):.2f} | {within}/{len(pts)} |"
            )
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["datasets"].get("cifar10") or next(iter(results["datasets"].values()))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for m, r in rows["methods"].items():
        qs = sorted(int(k) for k in r["curve"])
        curve = {int(k): v for k, v in r["curve"].items()}
        mean = [statistics.mean(curve[q]) for q in qs]
        std = [statistics.stdev(curve[q]) if len(curve[q]) > 1 else 0.0 for q in qs]
        ax.plot(qs, mean, marker="o", markersize=3, label=m, color="gray" if m == "random" else None)
        low = [a - b for a, b in zip(mean, std, strict=True)]
        high = [a + b for a, b in zip(mean, std, strict=True)]
        ax.fill_between(qs, low, high, alpha=0.15)
    ax.axhline(rows["optimum"], color="black", linestyle=":", linewidth=1, label="optimum")
    ax.set_xscale("log")
    ax.set_xlabel("table queries")
    ax.set_ylabel("true accuracy of the most probable cell (%)")
    ax.set_title("NAS-Bench-201, CIFAR-10 valid (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, small budgets, CIFAR-10 only")
    parser.add_argument("--methods", default=",".join(estimators()))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", default="100,300,1000", help="queries at which the table reports")
    parser.add_argument("--curve", default="50,100,200,300,500,1000", help="queries at which the plot reports")
    parser.add_argument("--lrs", default="0.05,0.1,0.2,0.4,0.8,1.6", help="learning rates of phi tried on CIFAR-10")
    parser.add_argument("--latency-weight", type=float, default=1.0, help="weight of the latency hinge")
    parser.add_argument("--tune-budget", type=int, default=300)
    parser.add_argument("--no-latency", dest="latency", action="store_false", help="skip the latency table")
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budgets, args.curve, args.datasets = 2, "50,100", "50,100", "cifar10"
        args.lrs, args.tune_budget = "0.1", 100
    t0 = time.perf_counter()
    results = run(args)
    results["total_s"] = time.perf_counter() - t0
    text = tables(results)
    with tempfile.TemporaryDirectory(prefix="unas_nb201_") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text(text + "\n")
        plot(results, out / "nb201_queries.png")
        print(f"`python benchmarks/nb201.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
              f"({results['total_s'] / 60:.1f} min)\n")  # fmt: skip
        print(text)
        print(f"\noutputs: {out}")


if __name__ == "__main__":
    main()
