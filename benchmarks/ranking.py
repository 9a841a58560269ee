"""Does the supernet rank cells? The NAS-Bench-201 supernet on Fashion-MNIST against FMNIST-201.

    python benchmarks/ranking.py                        # every variant, 24 epochs each (about 2 hours on 2 cores)
    python benchmarks/ranking.py --quick                # a smoke run (under a minute)
    python benchmarks/ranking.py --variants discrete,fair --epochs 12 --eval-at 2,6

For each variant, the NAS-Bench-201 supernet (``NB201Space``, C=8, N=1, on Fashion-MNIST at 16 px, the
table's protocol) is trained with phi held uniform (``SearchModule`` with the whole run as warm-up:
w-steps only) and, after ``--eval-at`` epochs and at the end, ``RankingMonitor(truth="fmnist201")``
evaluates it with the shared weights at every connected cell of the FMNIST-201 table (``--cells``, on the
same ``--eval-batches`` search-val batches each time): the Kendall tau over the table and over its top
20%, the Spearman rho, and how many of the supernet's 10 best cells are in the table's top 10%, against
the supernet's training time so far (evaluation time excluded). Every variant gets about the same
training time: one whose w update costs c single-path updates runs 1/c of the epochs.

Variants (each a setting the literature says matters; the default is ``discrete``):

* ``discrete``: one-hot paths z ~ uniform (SPOS), Adam lr 3e-3, cosine schedule (nb201_fmnist.yaml's search
  steps; its warm-up is ``deisomorphic``'s);
* ``sgd``: one-hot paths, SGD with Nesterov momentum 0.9, lr 0.05, weight decay 5e-4, cosine (NAS-Bench-201's
  own recipe);
* ``fair``: FairNAS's strict fairness (``warmup_w_step_arch="fair"``): every operation of every edge once
  per update;
* ``path_dropout``: every operation, each dropped with probability 0.5 (Bender et al. 2018);
* ``affine``: ``discrete`` with learned batch-norm scales and shifts in the cells (``cell_affine``);
* ``weight_decay``: ``discrete`` with L2 weight decay 5e-4 in Adam;
* ``recalibrated``: ``discrete``, each cell evaluated with batch-norm statistics re-estimated for it on 16
  further search-val batches (``RankingMonitor(recalibrate_batches=16)``; single-path one-shot NAS's
  evaluation) instead of each evaluation batch's own;
* ``deisomorphic``: one-hot paths drawn so that every distinct cell (isomorphism class) is trained equally
  often, not in proportion to how many genotypes compute it (``warmup_w_step_arch="deisomorphic"``; Ning
  et al. 2021);
* ``relaxed``: Gumbel-softmax relaxed paths (temperature 1) instead of one-hot ones;
* ``softmax``: the softmax(phi) mixture of every operation (DARTS's w-step);
* ``wide``: ``discrete`` at width C=16 instead of 8;
* ``few_shot``: ``discrete`` for half the epochs, then split on one edge into 5 sub-supernets that share
  the other half (``train_few_shot``; Zhao et al. 2021).

The table ends with what one stand-alone training seed ranks like (its tau against the other seed):
the noise of the ground truth itself, a ceiling no ranker can be measured beyond; and with what the
parameter count ranks like (a zero-cost ranker: a supernet below it has learned less than a count).
Each point also gives the figures of the supernet's accuracy and the parameter count combined
(``RankingMonitor``'s ``_with_count`` figures: ``analysis.ranking.with_count_report``, weights
``SUPERNET_COUNT_WEIGHTS``): the "supernet + count" columns; ``--combine`` compares other weights.

An interrupted run resumes: variants already in ``--out``/results.json with the same settings are kept.
Writes ``results.json``, ``table.md`` and ``ranking.png`` (tau against training minutes, one curve per
variant) to ``--out`` and prints the table; the last line reads ``best: VARIANT tau=X.XXX``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: published Kendall tau of weight-sharing supernets on NAS-Bench-201 (CIFAR-10), for the table's caption
PUBLISHED = "one-shot supernets about 0.5-0.6, few-shot supernets about 0.6-0.7 (Zhao et al. 2021)"

#: each variant: SearchModule / NB201Space settings, and its cost per w update relative to one path
#: ("cost": the variant runs steps-per-epoch / cost updates per epoch, so every variant gets about the same time)
VARIANTS: dict[str, dict[str, Any]] = {
    "discrete": {},
    "sgd": {"optimizer": "sgd"},
    "fair": {"warmup_w_step_arch": "fair", "cost": 4},
    "path_dropout": {"warmup_w_step_arch": "path_dropout", "cost": 3},
    "affine": {"cell_affine": True},
    "weight_decay": {"weight_decay": 5e-4},  # Adam with L2 weight decay (the table's own 5e-4)
    "recalibrated": {"recalibrate": 16},  # discrete, evaluated with BN statistics re-estimated per cell (SPOS)
    "deisomorphic": {"warmup_w_step_arch": "deisomorphic"},  # every distinct cell equally often (Ning et al. 2021)
    "relaxed": {"w_step_arch": "relaxed", "cost": 4},
    "softmax": {"w_step_arch": "softmax", "cost": 4},
    "wide": {"channels": 16, "cost": 2},
    "few_shot": {},  # train_few_shot: discrete on half the budget, then 5 sub-supernets split on one edge
}


def train_supernet(variant: str, args: argparse.Namespace, out: Path, epochs: int | None = None) -> Supernet:
    """One supernet of ``variant``: its ranking figures after every epoch, with the training minutes."""
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from unas_lightning import FashionMNISTDataModule, SearchModule
    from unas_lightning.callbacks import RankingMonitor
    from unas_lightning.spaces import NB201Space

    settings = VARIANTS[variant]
    L.seed_everything(args.seed)
    # the same training time for every variant: a variant whose w update costs c single-path updates
    # runs 1/c of the epochs, and is evaluated after the same fractions of them
    epochs = epochs or args.epochs
    scale = 1 / settings.get("cost", 1)
    total = max(1, round(epochs * scale))
    at = sorted({max(1, round(e * scale)) for e in args.eval_at if e <= epochs} | {total})

    def optimizer(params: Any) -> torch.optim.Optimizer:
        if settings.get("optimizer") == "sgd":
            return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        return torch.optim.Adam(params, lr=3e-3, weight_decay=settings.get("weight_decay", 0.0))

    space = NB201Space(
        in_channels=1,
        num_classes=10,
        channels=settings.get("channels", 8),
        cells_per_stage=1,
        cell_affine=settings.get("cell_affine", False),
    )
    module = SearchModule(
        space,
        w_step_arch=settings.get("w_step_arch", "discrete"),
        warmup_w_step_arch=settings.get("warmup_w_step_arch"),
        warmup_epochs=total,
        w_optimizer=optimizer,
    )
    data = FashionMNISTDataModule(split="search", batch_size=args.batch_size, image_size=args.image_size)
    clock = TrainingClock()
    monitor = RankingMonitor(
        truth="fmnist201",
        cells=args.cells,
        batches=args.eval_batches,
        at_epochs=at,
        recalibrate_batches=settings.get("recalibrate", 0),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=total,
        limit_train_batches=args.steps_per_epoch,
        limit_val_batches=0,
        logger=CSVLogger(out, name=variant),
        callbacks=[clock, monitor],  # the clock's epoch end runs before the monitor's evaluation
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    points = []
    for record in monitor.history:
        minutes = clock.minutes[record["epoch"] - 1]
        figures = {k: record[k] for k in ("kendall_tau", "kendall_tau_top20", "spearman_rho", "top_k_overlap")}
        points.append(
            {"variant": variant, "steps": record["step"], "minutes": minutes, "cells": len(record["supernet"]),
             "mean_accuracy": record["mean_accuracy"], "spread": record["accuracy_spread"], **figures,
             **{k: record[k] for k in COMBINED}}
        )  # fmt: skip
        print(f"{variant}: {points[-1]}", flush=True)
    return Supernet(points, module, monitor, trainer, clock.seconds)


@dataclass
class Supernet:
    """A trained supernet with what measured it."""

    points: list[dict[str, Any]]
    module: Any  # SearchModule
    monitor: Any  # RankingMonitor (its architectures and evaluation batches)
    trainer: L.Trainer
    seconds: float  # training time, evaluations excluded


def train_few_shot(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """``few_shot`` (Zhao et al. 2021): a one-shot supernet on half the budget, split on one edge into 5.

    The one-shot supernet (``discrete``) trains for half the epochs (its figures are the curve's first
    points); ``split_supernet`` then copies it once per operation of edge ``--split-row``, each copy
    trains that operation only on that edge for an equal share of the other half (fresh Adam, constant
    lr 1e-3), and every cell is evaluated by the copy of its operation: the same total number of w
    updates as ``discrete``.
    """
    import torch

    from unas_lightning import SearchModule
    from unas_lightning.analysis.ranking import ranking_report, supernet_accuracy, with_count_report
    from unas_lightning.search.few_shot import pick, split_supernet

    half = max(1, args.epochs // 2)
    base = train_supernet("discrete", args, out, epochs=half)
    points = [{**p, "variant": "few_shot"} for p in base.points]
    subs = split_supernet(base.module.space, "cell", args.split_row)
    steps = max(1, round(base.trainer.num_training_batches * (args.epochs - half) / len(subs)))
    seconds = base.seconds
    for sub in subs:  # w only (a warm-up longer than the run), constant lr: max_steps ends it
        module = SearchModule(
            sub,
            warmup_epochs=10**6,
            w_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
            w_scheduler=lambda opt: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0),
        )
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=-1, max_steps=steps, limit_train_batches=args.steps_per_epoch,
            limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False,
        )  # fmt: skip
        start = time.monotonic()
        trainer.fit(module, datamodule=base.trainer.datamodule)
        seconds += time.monotonic() - start
    genotypes, truths = base.monitor.architectures(base.module)
    data = base.monitor.evaluation_data(base.trainer)
    accuracies = [100 * supernet_accuracy(pick(subs, g, "cell", args.split_row), g, data) for g in genotypes]
    report = ranking_report(accuracies, truths)
    points.append(
        {"variant": "few_shot", "steps": base.points[-1]["steps"] + len(subs) * steps, "minutes": seconds / 60,
         "cells": len(accuracies), "mean_accuracy": sum(accuracies) / len(accuracies),
         "spread": statistics.pstdev(accuracies), **{k: v for k, v in report.items() if k != "cells"},
         **with_count_report(accuracies, cast("list[float]", base.monitor.params), truths)}
    )  # fmt: skip
    print(f"few_shot: {points[-1]}", flush=True)
    return points


class TrainingClock(L.Callback):
    """The supernet's training minutes at the end of every epoch (the evaluations' own time left out)."""

    def __init__(self) -> None:
        self.seconds, self.start = 0.0, 0.0
        self.minutes: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds += time.monotonic() - self.start
        self.minutes.append(self.seconds / 60)


def ceiling() -> str:
    """What one stand-alone training ranks like: the tau of the table's seed 0 against its seed 1 (and
    against the two seeds' mean, which its own noise inflates), the same figures as for a supernet."""
    from unas_lightning.analysis.ranking import ranking_report
    from unas_lightning.search.tabular import open_table

    table = open_table("fmnist201")
    pairs = [table.accuracies(g) for g in table.cells() if g.connected()]  # type: ignore[attr-defined]
    pairs = [p for p in pairs if len(p) >= 2]
    one = [p[0] for p in pairs]
    across = ranking_report(one, [p[1] for p in pairs])
    mean = ranking_report(one, [sum(p) / len(p) for p in pairs])
    return (
        f"\none training seed as the ranker ({len(pairs)} cells): against the other seed Kendall tau "
        f"{across['kendall_tau']:.3f} (top 20% {across['kendall_tau_top20']:.3f}, top-10 in top 10% "
        f"{across['top_k_overlap']:.0f}); against the two seeds' mean (the table, itself included) tau "
        f"{mean['kendall_tau']:.3f}, top-10 in top 10% {mean['top_k_overlap']:.0f}"
    )


def by_parameters() -> str:
    """What a zero-cost ranker reaches: each connected cell of the table ranked by its network's parameter
    count (no training at all), with the same figures as for a supernet."""
    import random

    from unas_lightning.analysis.ranking import ranking_report
    from unas_lightning.search.tabular import open_table
    from unas_lightning.spaces.nb201.genotype import NB201Genotype

    table, cifar10 = open_table("fmnist201"), open_table("cifar10")
    cells = [g for g in table.cells() if g.connected()]  # type: ignore[attr-defined]
    report = ranking_report([table.params_m(g) for g in cells], [table.accuracy(g) for g in cells])
    drawn = [g for g in random.Random(0).sample(list(NB201Genotype.all()), 2000) if g.connected()]
    published = ranking_report([cifar10.params_m(g) for g in drawn], [cifar10.accuracy(g) for g in drawn])
    return (
        f"the parameter count as the ranker ({len(cells)} cells, no training): Kendall tau "
        f"{report['kendall_tau']:.3f} (top 20% {report['kendall_tau_top20']:.3f}), Spearman rho "
        f"{report['spearman_rho']:.3f}, top-10 in top 10% {report['top_k_overlap']:.0f}; on NAS-Bench-201's "
        f"CIFAR-10 table ({len(drawn)} random connected cells) Kendall tau {published['kendall_tau']:.3f}"
    )


#: the figures of the supernet's accuracy and the parameter count combined (``analysis.ranking.with_count_report``)
COMBINED = ("kendall_tau_with_count", "kendall_tau_top20_with_count", "top_k_overlap_with_count")


def combinations(folders: list[Path]) -> str:
    """Supernet and parameter count combined at several weights, for every evaluation the studies in
    ``folders`` recorded (each variant's ``ranking.json``): a table of Kendall tau / tau over the top 20% /
    top-10 in top 10% per weight (supernet : count), the supernet alone and the count alone at its ends."""
    from unas_lightning.analysis.fmnist201 import FMNIST201Table
    from unas_lightning.analysis.ranking import with_count_report
    from unas_lightning.spaces.genotype import Genotype

    size = FMNIST201Table(train_missing=False).params_m
    weights = [(1, 0), (3, 1), (1, 1), (1, 3), (0, 1)]
    names = ["supernet", "3:1", "1:1", "1:3", "count"]
    rows = [f"| run | variant | w-steps | {' | '.join(names)} |", "|---|---|---|" + "---|" * len(names)]
    for path in sorted(p for folder in folders for p in folder.glob("*/version_*/ranking.json")):
        for record in json.loads(path.read_text())["evaluations"]:
            params = record.get("params") or [size(Genotype.from_dict(a)) for a in record["architectures"]]  # type: ignore[arg-type]
            cells = []
            for weight in weights:
                r = with_count_report(record["supernet"], params, record["truth"], weights=weight)
                tau, top, overlap = (r[k] for k in COMBINED)
                cells.append(f"{tau:.3f} / {top:.3f} / {overlap:.0f}")
            rows.append(f"| {path.parents[2].name} | {path.parents[1].name} | {record['step']} | {' | '.join(cells)} |")
    return "\n".join(rows)


def resumed(path: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The points of an earlier run in the same folder with the same settings (other variants aside)."""
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    free = ("variants", "out", "combine")  # what may differ between runs whose points belong together

    def kept(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k not in free}

    same = kept(earlier["settings"]) == kept(settings)
    return list(earlier["points"]) if same else []


def table(points: list[dict[str, Any]]) -> str:
    rows = [
        "| variant | w-steps | training min | cells | Kendall tau | tau, top 20% | Spearman rho | top-10 in top 10% "
        "| mean acc | supernet + count: tau | tau, top 20% | top-10 in top 10% |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        rows.append(
            f"| {p['variant']} | {p['steps']} | {p['minutes']:.1f} | {p['cells']} | {p['kendall_tau']:.3f} | "
            f"{p['kendall_tau_top20']:.3f} | {p['spearman_rho']:.3f} | {p['top_k_overlap']:.0f} | "
            f"{p['mean_accuracy']:.1f} | {_get(p, COMBINED[0])} | {_get(p, COMBINED[1])} | {_get(p, COMBINED[2], 0)} |"
        )
    return "\n".join(rows)


def _get(point: dict[str, Any], key: str, digits: int = 3) -> str:
    """``point[key]`` to ``digits`` places, or "-" (points measured before the figure existed)."""
    return f"{point[key]:.{digits}f}" if key in point else "-"


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for variant in dict.fromkeys(p["variant"] for p in points):
        mine = [p for p in points if p["variant"] == variant]
        for ax, key in zip(axes, ("kendall_tau", "top_k_overlap"), strict=True):
            ax.plot([p["minutes"] for p in mine], [p[key] for p in mine], marker="o", label=variant)
    axes[0].set(xlabel="supernet training (min)", ylabel="Kendall tau vs FMNIST-201", title="rank correlation")
    axes[1].set(xlabel="supernet training (min)", ylabel="of the supernet's top 10", title="in the table's top 10%")
    axes[0].axhspan(0.5, 0.6, color="grey", alpha=0.2, label="published one-shot")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=24, help="the budget, in epochs of one-path w updates")
    parser.add_argument("--eval-at", default="3,8", help="the smaller budgets evaluated too (epochs)")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="cut epochs short (default: whole)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=16, help="pixels a side (FMNIST-201 trained at 16)")
    parser.add_argument("--cells", type=int, default=1000, help="cells of the table evaluated (at most all)")
    parser.add_argument("--eval-batches", type=int, default=32, help="search-val batches per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split-row", type=int, default=0, help="few_shot: the edge split on (genotype.EDGES)")
    parser.add_argument("--out", default="runs/ranking")
    parser.add_argument("--quick", action="store_true", help="3 variants, 2 epochs of 8 steps, 8 cells")
    parser.add_argument(
        "--combine", nargs="+", metavar="FOLDER", default=None,
        help="train nothing: supernet and parameter count combined at several weights, for every evaluation "
        "recorded in these earlier --out folders",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.eval_at = [int(e) for e in str(args.eval_at).split(",") if e]
    if args.combine:
        print(combinations([Path(f) for f in args.combine]))
        print("each cell: Kendall tau / tau over the table's top 20% / the ranker's top 10 in the table's top 10%")
        return []
    if args.quick:
        args.variants, args.epochs, args.eval_at, args.steps_per_epoch, args.cells, args.eval_batches = (
            "discrete,fair,few_shot", 2, [1], 8, 8, 1
        )  # fmt: skip
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, points = time.monotonic(), resumed(out / "results.json", vars(args))
    for variant in variants:
        if any(p["variant"] == variant for p in points):
            print(f"{variant}: done in an earlier run with the same settings ({out / 'results.json'})")
            continue
        points += train_few_shot(args, out) if variant == "few_shot" else train_supernet(variant, args, out).points
        (out / "results.json").write_text(json.dumps({"settings": vars(args), "points": points}, indent=1))
    points = [p for p in points if p["variant"] in variants]
    text = table(points) + "\n" + ceiling() + "\n" + by_parameters()
    (out / "table.md").write_text(text + "\n")
    plot(points, out / "ranking.png")
    print(text)
    print(f"published Kendall tau on NAS-Bench-201: {PUBLISHED}")
    print(f"total {(time.monotonic() - start) / 60:.1f} min; results in {out}")
    best = max(points, key=lambda p: p["kendall_tau"])
    print(f"best: {best['variant']} tau={best['kendall_tau']:.3f}")
    return points


if __name__ == "__main__":
    main()
