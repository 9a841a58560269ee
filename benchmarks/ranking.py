"""Does the supernet rank cells? The NAS-Bench-201 supernet on Fashion-MNIST against FMNIST-201.

    python benchmarks/ranking.py                        # every variant, 6 budgets each (about 2 hours on 2 cores)
    python benchmarks/ranking.py --quick                # a smoke run (about a minute)
    python benchmarks/ranking.py --variants discrete,sgd --epochs 4 --steps-per-epoch 200

For each variant, the NAS-Bench-201 supernet (``NB201Space``, Fashion-MNIST, 28 px) is trained with phi held
uniform (``SearchModule`` with the whole run as warm-up: w-steps only) and, after every epoch,
``RankingMonitor(truth="fmnist201")`` evaluates it, with the shared weights, at every connected cell of the
FMNIST-201 table (``--cells``, on the same ``--eval-batches`` search-val batches each time): the Kendall
tau over the table and over its top 20%, the Spearman rho, and how many of the supernet's 10 best cells
are in the table's top 10%, against the supernet's training time so far (evaluation time excluded).

Variants (each a setting the literature says matters; the default is ``discrete``):

* ``discrete``: one-hot paths z ~ uniform (SPOS-like), Adam lr 3e-3, cosine schedule (nb201_fmnist.yaml);
* ``relaxed``: Gumbel-softmax relaxed paths (temperature 1) instead of one-hot ones;
* ``softmax``: the softmax(phi) mixture of every operation (DARTS's w-step);
* ``sgd``: one-hot paths, SGD with Nesterov momentum 0.9, lr 0.05, weight decay 5e-4, cosine (NAS-Bench-201's
  own recipe);
* ``wide``: ``discrete`` at width C=16 instead of 8.

Writes ``results.json``, ``table.md`` and ``ranking.png`` (tau against training minutes, one curve per
variant) to ``--out`` and prints the table; the last line reads ``best: VARIANT tau=X.XXX``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: published Kendall tau of weight-sharing supernets on NAS-Bench-201 (CIFAR-10), for the table's caption
PUBLISHED = "one-shot supernets about 0.5-0.6, few-shot supernets about 0.6-0.7 (Zhao et al. 2021)"

VARIANTS: dict[str, dict[str, Any]] = {
    "discrete": {},
    "relaxed": {"w_step_arch": "relaxed"},
    "softmax": {"w_step_arch": "softmax"},
    "sgd": {"optimizer": "sgd"},
    "wide": {"channels": 16},
}


def train_supernet(variant: str, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """One supernet of ``variant``: its ranking figures after every epoch, with the training minutes."""
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from unas_lightning import FashionMNISTDataModule, SearchModule
    from unas_lightning.callbacks import RankingMonitor
    from unas_lightning.spaces import NB201Space

    settings = VARIANTS[variant]
    L.seed_everything(args.seed)

    def optimizer(params: Any) -> torch.optim.Optimizer:
        if settings.get("optimizer") == "sgd":
            return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        return torch.optim.Adam(params, lr=3e-3)

    space = NB201Space(in_channels=1, num_classes=10, channels=settings.get("channels", 8), cells_per_stage=1)
    module = SearchModule(
        space, w_step_arch=settings.get("w_step_arch", "discrete"), warmup_epochs=args.epochs, w_optimizer=optimizer
    )
    data = FashionMNISTDataModule(split="search", batch_size=args.batch_size)
    clock = TrainingClock()
    monitor = RankingMonitor(truth="fmnist201", cells=args.cells, batches=args.eval_batches, every_n_epochs=1)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
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
    for record, minutes in zip(monitor.history, clock.minutes, strict=True):
        figures = {k: record[k] for k in ("kendall_tau", "kendall_tau_top20", "spearman_rho", "top_k_overlap")}
        points.append(
            {"variant": variant, "steps": record["step"], "minutes": minutes, "cells": len(record["supernet"]),
             "mean_accuracy": record["mean_accuracy"], **figures}
        )  # fmt: skip
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


def table(points: list[dict[str, Any]]) -> str:
    rows = [
        "| variant | w-steps | training min | cells | Kendall tau | tau, top 20% | Spearman rho | top-10 in top 10% "
        "| mean acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        rows.append(
            f"| {p['variant']} | {p['steps']} | {p['minutes']:.1f} | {p['cells']} | {p['kendall_tau']:.3f} | "
            f"{p['kendall_tau_top20']:.3f} | {p['spearman_rho']:.3f} | {p['top_k_overlap']:.0f} | "
            f"{p['mean_accuracy']:.1f} |"
        )
    return "\n".join(rows)


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
    parser.add_argument("--epochs", type=int, default=6, help="budgets: one evaluation after every epoch")
    parser.add_argument("--steps-per-epoch", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cells", type=int, default=1000, help="cells of the table evaluated (at most all)")
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/ranking")
    parser.add_argument("--quick", action="store_true", help="2 variants, 2 epochs of 3 steps, 8 cells")
    args = parser.parse_args(argv)
    if args.quick:
        args.variants, args.epochs, args.steps_per_epoch, args.cells, args.eval_batches = "discrete,softmax", 2, 3, 8, 1
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, points = time.monotonic(), []
    for variant in variants:
        points += train_supernet(variant, args, out)
        (out / "results.json").write_text(json.dumps({"settings": vars(args), "points": points}, indent=1))
    text = table(points)
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
