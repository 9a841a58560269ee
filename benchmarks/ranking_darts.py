"""Does the DARTS-space quickstart supernet rank cells? Its one-hot accuracies against stand-alone training.

    python benchmarks/ranking_darts.py          # 16 cells x 2 seeds judged (~70 min), 64 supernet epochs (~15 min)
    python benchmarks/ranking_darts.py --quick  # a smoke run (about a minute; the test suite runs it)

1. **The judge**: ``--cells`` architectures drawn uniformly from the quickstart's DARTS space
   (``configs/search/quickstart.yaml``: 8 channels, 3 cells, 4 nodes, the paper's 7 operations, stem
   stride 2, 28x28 Fashion-MNIST), each derived network trained stand-alone with the FMNIST-201 protocol
   at 28 px (``analysis.fmnist201.train_network``: 4 epochs of 20,000 images, SGD with Nesterov momentum,
   cosine schedule) for training seeds 0 and 1, on ``--workers`` processes. The two seeds' agreement
   (Kendall tau) is the judge's own noise: the ceiling no supernet can be measured beyond.
2. **The supernet**: the quickstart's ``SearchModule`` with phi held uniform (the whole run is its
   warm-up: one-hot w-steps, Adam 3e-3, the quickstart's batches), trained for ``--epochs`` epochs of
   the quickstart's 100 steps; after each of ``--eval-at`` epochs its one-hot accuracy at every judged
   cell (shared weights, ``analysis.ranking.supernet_accuracy`` on the same ``--eval-batches`` search-val
   batches): the mean accuracy, Kendall tau and Spearman rho against the judge's seed mean, and a 95%
   bootstrap interval of tau (cells resampled with replacement, 2,000 times).

The quickstart itself trains its supernet for 2 warm-up epochs, then searches 2 more (w-steps go on).
Judge results are cached in ``--out``/judge.json (an interrupted run resumes). Writes ``results.json``
and ``table.md`` to ``--out`` and prints the table; the last line reads ``best: epochs=E tau=X.XXX``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import random
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACE = {"in_channels": 1, "num_classes": 10, "channels": 8, "layers": 3, "nodes": 4, "ops": "paper", "stem_stride": 2}
_SPLIT: Any = None  # the judge's data, loaded once per worker


def _space():
    from unas_lightning.spaces import DartsSpace

    return DartsSpace(**SPACE)


def _protocol(quick: bool):
    from unas_lightning.analysis.fmnist201 import Protocol

    if quick:
        return Protocol(image_size=28, epochs=1, train_examples=512, eval_examples=512)
    return Protocol(image_size=28)


def _init_worker(quick: bool) -> None:
    import torch

    from unas_lightning.analysis.fmnist201 import Split

    global _SPLIT
    torch.set_num_threads(1)
    _SPLIT = Split.load(_protocol(quick))


def _judge_one(job: tuple[str, int, bool]) -> tuple[str, int, dict[str, float]]:
    """Train one cell stand-alone (in a worker): its validation and test accuracy and training time."""
    from unas_lightning.analysis.fmnist201 import train_network
    from unas_lightning.spaces.genotype import Genotype

    genotype_json, seed, quick = job
    genotype = Genotype.from_dict(json.loads(genotype_json))
    space = _space()
    result = train_network(lambda: space.derived_network(genotype), _protocol(quick), seed, _SPLIT)
    return genotype_json, seed, {"val": result.val_acc, "test": result.test_acc, "seconds": result.train_seconds}


def cells(n: int, seed: int) -> list[str]:
    """``n`` distinct architectures drawn uniformly from the space, as genotype JSON strings."""
    import torch

    from unas_lightning.distributions import ArchDistribution

    space = _space()
    gen = torch.Generator().manual_seed(seed)
    uniform = {k: torch.zeros_like(v) for k, v in space.arch.items()}
    out: list[str] = []
    while len(out) < n:
        text = json.dumps(space.genotype(ArchDistribution(uniform).sample(generator=gen)).to_dict(), sort_keys=True)
        if text not in out:
            out.append(text)
    return out


def judge(archs: list[str], args: argparse.Namespace, out: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Every cell's stand-alone results per seed, trained where missing from ``out``/judge.json."""
    path = out / "judge.json"
    done: dict[str, dict[str, dict[str, float]]] = json.loads(path.read_text()) if path.exists() else {}
    jobs = [(a, s, args.quick) for a in archs for s in (0, 1) if str(s) not in done.get(a, {})]
    if not jobs:
        return {a: done[a] for a in archs}
    where = f"{args.workers} worker(s)" if args.workers > 0 else "this process"
    print(f"judge: {len(jobs)} trainings on {where}", file=sys.stderr, flush=True)
    with contextlib.ExitStack() as stack:
        if args.workers > 0:
            pool = stack.enter_context(mp.get_context("spawn").Pool(args.workers, _init_worker, (args.quick,)))
            results = pool.imap_unordered(_judge_one, jobs)
        else:  # --workers 0 (--quick): no interpreters to start, one thread as in a worker
            import torch

            stack.callback(torch.set_num_threads, torch.get_num_threads())
            _init_worker(args.quick)
            results = map(_judge_one, jobs)
        for i, (arch, seed, result) in enumerate(results, 1):
            done.setdefault(arch, {})[str(seed)] = result
            path.write_text(json.dumps(done, indent=1) + "\n")
            print(f"  [{i}/{len(jobs)}] seed {seed}: val {result['val']:.2f} ({result['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
    return {a: done[a] for a in archs}


def bootstrap_tau(x: list[float], y: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of Kendall tau over cells resampled with replacement."""
    from unas_lightning.analysis.ranking import kendall_tau

    rng = random.Random(seed)
    taus = []
    for _ in range(rounds):
        idx = [rng.randrange(len(x)) for _ in x]
        xs, ys = [x[i] for i in idx], [y[i] for i in idx]
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            taus.append(kendall_tau(xs, ys))
    taus.sort()
    return taus[int(0.025 * len(taus))], taus[int(0.975 * len(taus)) - 1]


def supernet(archs: list[str], truth: list[float], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The quickstart supernet with phi uniform, measured after each of ``--eval-at`` epochs."""
    import lightning as L
    import torch

    from unas_lightning import FashionMNISTDataModule, SearchModule
    from unas_lightning.analysis.ranking import kendall_tau, spearman_rho, supernet_accuracy
    from unas_lightning.spaces.genotype import Genotype

    L.seed_everything(args.seed, verbose=False)
    genotypes = [Genotype.from_dict(json.loads(a)) for a in archs]
    space = _space()
    module = SearchModule(space, warmup_epochs=args.epochs, w_optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    data = FashionMNISTDataModule(split="search")
    data.setup("fit")
    batches = []
    for i, (x, y) in enumerate(data.val_dataloader()):
        if i == args.eval_batches:
            break
        batches.append((x, y))
    points: list[dict[str, Any]] = []
    seconds = [0.0]

    class Measure(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seconds[0] += time.perf_counter() - self.start
            epoch = trainer.current_epoch + 1
            if epoch not in args.eval_at and epoch != args.epochs:
                return
            acc = [100 * supernet_accuracy(space, g, batches) for g in genotypes]
            low, high = bootstrap_tau(acc, truth, args.bootstrap)
            point = {
                "epochs": epoch,
                "steps": trainer.global_step,
                "train_s": seconds[0],
                "mean_accuracy": statistics.fmean(acc),
                "accuracy_range": [min(acc), max(acc)],
                "kendall_tau": kendall_tau(acc, truth),
                "tau_95": [low, high],
                "spearman_rho": spearman_rho(acc, truth),
                "supernet": acc,
            }
            points.append(point)
            print(f"supernet epoch {epoch}: mean {point['mean_accuracy']:.1f}%, tau {point['kendall_tau']:.3f} "
                  f"[{low:.2f}, {high:.2f}]", file=sys.stderr, flush=True)  # fmt: skip

    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        limit_train_batches=args.steps_per_epoch,
        limit_val_batches=0,
        logger=False,
        callbacks=[Measure()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(args.out),
    )
    trainer.fit(module, datamodule=data)
    return points


def table(points: list[dict[str, Any]], ceiling: float, ceiling_ci: tuple[float, float], n: int) -> str:
    lines = [
        "| supernet epochs (100 steps) | training s | one-hot accuracy % (mean, min-max) | Kendall tau [95% CI] "
        "| Spearman rho |",
        "|---|---|---|---|---|",
    ]
    for p in points:
        lo, hi = p["tau_95"]
        a, b = p["accuracy_range"]
        lines.append(
            f"| {p['epochs']} | {p['train_s']:.0f} | {p['mean_accuracy']:.1f} ({a:.1f}-{b:.1f}) | "
            f"{p['kendall_tau']:.3f} [{lo:.2f}, {hi:.2f}] | {p['spearman_rho']:.3f} |"
        )
    lines.append(
        f"| judge: seed 0 vs seed 1 ({n} cells) | | | {ceiling:.3f} [{ceiling_ci[0]:.2f}, {ceiling_ci[1]:.2f}] | |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=64, help="supernet epochs of --steps-per-epoch steps")
    parser.add_argument(
        "--eval-at", type=lambda t: [int(e) for e in t.split(",")], default=[1, 2, 4, 8, 16, 32, 48, 64]
    )
    parser.add_argument("--steps-per-epoch", type=int, default=100, help="the quickstart's epoch")
    parser.add_argument("--eval-batches", type=int, default=20, help="search-val batches per accuracy")
    parser.add_argument("--workers", type=int, default=2, help="processes training the judge (0: this one)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="resamples of each tau's 95%% interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ranking_darts")
    parser.add_argument(
        "--quick", action="store_true", help="4 cells, a tiny judge in this process, 2 supernet epochs of 5 steps"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.epochs, args.eval_at, args.steps_per_epoch, args.eval_batches = 4, 2, [1, 2], 5, 2
        args.bootstrap, args.workers = 200, 0
    args.out.mkdir(parents=True, exist_ok=True)
    from unas_lightning.analysis.ranking import kendall_tau

    start = time.perf_counter()
    archs = cells(args.cells, args.seed)
    results = judge(archs, args, args.out)
    judge_s = time.perf_counter() - start
    seed0 = [results[a]["0"]["val"] for a in archs]
    seed1 = [results[a]["1"]["val"] for a in archs]
    truth = [(a + b) / 2 for a, b in zip(seed0, seed1, strict=True)]
    ceiling, ceiling_ci = kendall_tau(seed0, seed1), bootstrap_tau(seed0, seed1, args.bootstrap)
    points = supernet(archs, truth, args)
    noise = statistics.fmean(abs(a - b) / 2**0.5 for a, b in zip(seed0, seed1, strict=True))
    summary = {
        "cells": archs,
        "judge": results,
        "judge_protocol": asdict(_protocol(args.quick)),
        "judge_seed_tau": ceiling,
        "judge_seed_tau_95": list(ceiling_ci),
        "judge_spread": statistics.pstdev(truth),
        "judge_noise": noise,
        "judge_s": judge_s,
        "points": points,
    }
    (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = table(points, ceiling, ceiling_ci, len(archs))
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    print(
        f"\njudge: {len(archs)} cells x 2 seeds, validation accuracy {min(truth):.2f}-{max(truth):.2f}% "
        f"(spread {summary['judge_spread']:.2f}, seed noise {noise:.2f} points)"
    )
    best = max(points, key=lambda p: p["kendall_tau"])
    print(f"best: epochs={best['epochs']} tau={best['kendall_tau']:.3f}")
    return summary


if __name__ == "__main__":
    main()
