"""Does the search find good architectures in the DARTS space? Paper Table 2 in miniature, against random cells.

    python benchmarks/search_quality_darts.py                 # the full table (about two hours on 2 CPU cores)
    python benchmarks/search_quality_darts.py --quick         # a smoke run (about a minute)
    python benchmarks/search_quality_darts.py --methods unas_gen,random --seeds 3 --random-cells 8

Everything runs through the public CLI class (``UnasCLI``, the same as ``unas-cli fit``) on the real
Fashion-MNIST data set:

1. **Searches**: the quickstart config (``configs/search/quickstart.yaml``) with, per method, the
   overrides below, one run per seed; the genotype each writes is its result.
2. **Random cells**: architectures drawn uniformly from the same space (seeded).
3. **Retraining**: every searched and random cell is trained from scratch with one fixed short recipe,
   ``configs/retrain/quick_fmnist.yaml`` as it is (its per-epoch validation off), and tested on
   ``--test-batches`` batches of the test set.
4. **Weight-sharing diagnostics**: a supernet is trained with phi held uniform (the search's warm-up
   only) for each w-step mode (one-hot samples, relaxed samples at tau 0.4, the softmax mixture); its
   accuracy at every random cell (shared weights, ``ranking.supernet_accuracy``) is compared in order
   with the cells' stand-alone test accuracies: Kendall tau and Spearman rho (``ranking.rank_agreement``).

Methods (the objective and estimator of paper Table 2, plus DARTS and RLOO):

* ``unas_train``, ``unas_val``, ``unas_gen``: the quickstart's REBAR on L_train, L_val, L_gen;
* ``darts1``: DARTS first order (``Softmax`` on L_val, the w-step on the softmax mixture);
* ``rloo_gen``: ``Reinforce(num_samples=3)`` on L_gen;
* ``random``: the random cells.

Writes ``results.json``, ``table.md`` and ``accuracy.png`` (every seed shown) to ``--out``, and prints
the tables. The last line reads ``best: METHOD mean=X.XXXX random_median=Y.YYYY``.
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

SEARCH_CONFIG = ROOT / "configs" / "search" / "quickstart.yaml"
RETRAIN_CONFIG = ROOT / "configs" / "retrain" / "quick_fmnist.yaml"
RELAXED_04 = '{"class_path": "unas_lightning.search.w_step.RelaxedSample", "init_args": {"temperature": 0.4}}'

METHODS = {
    "unas_train": ["--model.init_args.objective", "train"],
    "unas_val": ["--model.init_args.objective", "val"],
    "unas_gen": ["--model.init_args.objective", "gen"],
    "darts1": [
        "--model.init_args.estimator",
        "unas_lightning.estimators.Softmax",
        "--model.init_args.objective",
        "val",
        "--model.init_args.w_step_arch",
        "softmax",
    ],
    "rloo_gen": [
        "--model.init_args.estimator",
        "unas_lightning.estimators.Reinforce",
        "--model.init_args.estimator.init_args.num_samples",
        "3",
        "--model.init_args.objective",
        "gen",
    ],
}
W_STEPS = {"discrete": "discrete", "relaxed 0.4": RELAXED_04, "softmax": "softmax"}


def _quiet(out: Path, name: str) -> list[str]:
    return [
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(out / name),
        "--trainer.logger.init_args.name", name,
    ]  # fmt: skip


def _override(flag: str, value) -> list[str]:
    """``[flag, value]``, or nothing when ``value`` is None (the config's own setting stays)."""
    return [] if value is None else [flag, str(value)]


def _cli(args: list[str]):
    """``unas-cli ARGS`` in this process (the benchmark's own command line hidden from LightningCLI)."""
    from unas_lightning.cli.app import UnasCLI

    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return UnasCLI(args=args)
    finally:
        sys.argv = argv


def search(method: str, seed: int, args, out: Path) -> dict:
    """One search through the CLI; returns its genotype (as a dict), the wall time and the run's directory."""
    name = f"search_{method}_{seed}"
    t0 = time.perf_counter()
    budget = _override("--trainer.max_epochs", args.search_epochs)
    budget += _override("--trainer.limit_train_batches", args.search_steps)
    budget += _override("--model.init_args.warmup_epochs", args.warmup_epochs)
    cli = _cli(
        [
            *("fit", "--config", str(SEARCH_CONFIG), *METHODS[method], "--seed_everything", str(seed)),
            *_quiet(out, name),
            *budget,
        ]
    )
    seconds = time.perf_counter() - t0
    genotype = cli.model.space.genotype()
    return {"method": method, "seed": seed, "genotype": genotype.to_dict(), "search_s": seconds}


def search_space():
    """The search space of ``SEARCH_CONFIG``, built from the config itself (one source for its settings)."""
    import yaml

    from unas_lightning.utils.imports import import_dotted

    spec = yaml.safe_load(SEARCH_CONFIG.read_text())["model"]["init_args"]["space"]
    return import_dotted(spec["class_path"])(**spec.get("init_args", {}))


def random_genotypes(n: int, seed: int) -> list[dict]:
    """``n`` architectures drawn uniformly from the search config's space."""
    import torch

    space = search_space()
    g = torch.Generator().manual_seed(seed)
    return [space.genotype(space.distribution().sample(generator=g)).to_dict() for _ in range(n)]


def retrain(genotype: dict, tag: str, args, out: Path) -> dict:
    """Train a genotype from scratch with the fixed short recipe, then test it; accuracy and size."""
    from unas_lightning.utils.files import write_text_atomic
    from unas_lightning.utils.network_size import count_parameters

    path = out / "genotypes" / f"{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(genotype))
    name = f"retrain_{tag}"
    cli = _cli(
        [
            *(
                "fit",
                "--config",
                str(RETRAIN_CONFIG),
                "--model.init_args.genotype",
                str(path),
                "--seed_everything",
                "0",
            ),
            *_quiet(out, name),
            *_override("--trainer.max_epochs", args.retrain_epochs),
            *_override("--trainer.limit_train_batches", args.retrain_steps),
            *("--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"),
            *args.retrain_shrink,
        ]
    )
    cli.trainer.limit_test_batches = args.test_batches
    result = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    return {"test_acc": result["test/acc_top1"], "params_m": count_parameters(cli.model.net) / 1e6}


def supernet_ranking(w_step: str, cells: list[dict], standalone: list[float], args, out: Path) -> dict:
    """Train the supernet with phi uniform (warm-up only) on ``w_step``; rank the cells by it."""
    from unas_lightning.analysis.ranking import rank_agreement, supernet_accuracy
    from unas_lightning.genotypes import genotype_from_dict

    name = "supernet_" + w_step.replace(" ", "_")
    epochs = args.search_epochs or 4  # the quickstart's 4 epochs, all of them warm-up
    cli = _cli(
        [
            *("fit", "--config", str(SEARCH_CONFIG), "--model.init_args.w_step_arch", W_STEPS[w_step]),
            *_quiet(out, name),
            *("--trainer.max_epochs", str(epochs), *_override("--trainer.limit_train_batches", args.search_steps)),
            *("--model.init_args.warmup_epochs", str(epochs), "--trainer.limit_val_batches", "0"),
        ]
    )
    space = cli.model.space
    loader = cli.datamodule.val_dataloader()  # search-val: held out from the w-steps
    accs = [supernet_accuracy(space, genotype_from_dict(c), loader, max_batches=args.rank_batches) for c in cells]
    return {"w_step": w_step, **rank_agreement(accs, standalone).to_dict()}


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def tables(results: dict) -> str:
    rows = ["| method | runs | test accuracy % (mean ± std) | every run % | params (M) | search time (s) |"]
    rows.append("|---|---|---|---|---|---|")
    for method, runs in results["methods"].items():
        accs = [r["test_acc"] for r in runs]
        search_s = [r["search_s"] for r in runs if "search_s" in r]
        every = ", ".join(f"{100 * a:.2f}" for a in accs)
        params = statistics.mean(r["params_m"] for r in runs)
        seconds = f"{statistics.mean(search_s):.0f}" if search_s else "-"
        rows.append(f"| {method} | {len(runs)} | {_mean_std(accs)} | {every} | {params:.3f} | {seconds} |")
    rows += ["", "| w-step of the supernet | cells | Kendall tau | Spearman rho | supernet accuracy % (min-max) |"]
    rows.append("|---|---|---|---|---|")
    for r in results["ranking"]:
        rows.append(
            f"| {r['w_step']} | {len(r['supernet'])} | {r['kendall_tau']:.3f} | {r['spearman_rho']:.3f} | "
            f"{100 * min(r['supernet']):.1f}-{100 * max(r['supernet']):.1f} |"
        )
    return "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results["methods"])
    fig, ax = plt.subplots(figsize=(1.3 * len(methods) + 2, 4))
    for i, m in enumerate(methods):
        accs = [100 * r["test_acc"] for r in results["methods"][m]]
        xs = [i + 0.08 * (j - (len(accs) - 1) / 2) for j in range(len(accs))]
        ax.scatter(xs, accs, s=18, color="tab:gray" if m == "random" else "tab:blue", zorder=3)
        ax.hlines(statistics.mean(accs), i - 0.3, i + 0.3, color="black", linewidth=1.5, zorder=4)
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.set_ylabel("test accuracy after retraining (%)")
    ax.set_title("Searched vs random cells, Fashion-MNIST (every run; bar: mean)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny budgets, one search, two random cells, a small network"
    )
    parser.add_argument("--methods", default=",".join([*METHODS, "random"]))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random-cells", type=int, default=16)
    parser.add_argument("--search-epochs", type=int, default=None, help="default: the quickstart's (4)")
    parser.add_argument("--search-steps", type=int, default=None, help="default: the quickstart's (100)")
    parser.add_argument("--warmup-epochs", type=int, default=None, help="default: the quickstart's (2)")
    parser.add_argument("--retrain-epochs", type=int, default=None, help="default: quick_fmnist.yaml's (2)")
    parser.add_argument("--retrain-steps", type=int, default=None, help="default: quick_fmnist.yaml's (100)")
    parser.add_argument("--test-batches", type=int, default=40, help="test batches of 64 (40: 2560 images)")
    parser.add_argument("--rank-batches", type=int, default=20, help="search-val batches per supernet accuracy")
    parser.add_argument("--w-steps", default=",".join(W_STEPS), help="supernet w-step modes to rank with")
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.quick:
        args.methods, args.seeds, args.random_cells = "unas_gen,random", 1, 2
        args.search_epochs, args.search_steps, args.warmup_epochs = 1, 3, 0
        args.retrain_epochs, args.retrain_steps, args.test_batches, args.rank_batches = 1, 3, 2, 2
        args.w_steps = "discrete"
    # --quick checks the script: the retrain config's network at 8 channels x 3 cells on batches of 16
    args.retrain_shrink = (
        ["--model.init_args.channels", "8", "--model.init_args.layers", "3", "--data.init_args.batch_size", "16"]
        if args.quick
        else []
    )
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS and m != "random"]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {[*METHODS, 'random']}")

    import lightning as L
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    L.pytorch.utilities.disable_possible_user_warnings()
    with tempfile.TemporaryDirectory(prefix="unas_quality_") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        results: dict = {"args": vars(args), "methods": {}, "ranking": []}
        t_all = time.perf_counter()
        for method in methods:
            runs = []
            if method == "random":
                for i, cell in enumerate(random_genotypes(args.random_cells, seed=1234)):
                    runs.append({"genotype": cell, **retrain(cell, f"random_{i}", args, out)})
                    print(f"random cell {i}: {100 * runs[-1]['test_acc']:.2f}%", file=sys.stderr)
            else:
                for seed in range(args.seeds):
                    run = search(method, seed, args, out)
                    run.update(retrain(run["genotype"], f"{method}_{seed}", args, out))
                    runs.append(run)
                    print(
                        f"{method} seed {seed}: {100 * run['test_acc']:.2f}% ({run['search_s']:.0f} s)", file=sys.stderr
                    )
            results["methods"][method] = runs
        if "random" in results["methods"] and len(results["methods"]["random"]) >= 2:
            cells = [r["genotype"] for r in results["methods"]["random"]]
            standalone = [r["test_acc"] for r in results["methods"]["random"]]
            for w_step in args.w_steps.split(","):
                results["ranking"].append(supernet_ranking(w_step, cells, standalone, args, out))
        results["total_s"] = time.perf_counter() - t_all
        text = tables(results)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "table.md").write_text(text + "\n")
        plot(results, out / "accuracy.png")
        print(f"`python benchmarks/search_quality_darts.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
              f"({results['total_s'] / 60:.1f} min)\n")  # fmt: skip
        print(text)
        print(f"\noutputs: {out}")
        means = {m: statistics.mean(r["test_acc"] for r in runs) for m, runs in results["methods"].items()}
        searched = {m: v for m, v in means.items() if m != "random"}
        best = max(searched, key=searched.get) if searched else "none"
        rand = statistics.median(r["test_acc"] for r in results["methods"].get("random", [{"test_acc": float("nan")}]))
        print(f"best: {best} mean={searched.get(best, float('nan')):.4f} random_median={rand:.4f}")


if __name__ == "__main__":
    main()
