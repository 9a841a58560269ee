"""Build and check FMNIST-201, the NAS-Bench-201 ground truth on Fashion-MNIST (``spaces/nb201/fmnist201.py``).

    python benchmarks/fmnist201.py build                 # the shipped table: resumes where it stopped
    python benchmarks/fmnist201.py build --quick         # 2 cells, tiny budget (seconds)
    python benchmarks/fmnist201.py build --out P.json --protocol channels=8 image_size=16 --max-cells 40
    python benchmarks/fmnist201.py report [P.json ...]   # reliability figures of one or more tables

``build`` trains, for every training seed, the cells of the sample in a fixed order: the 50 best cells of
the NAS-Bench-201 CIFAR-10 table (one per isomorphism class) interleaved with cells drawn uniformly from
the 6,466 classes (``--uniform``, default 300; disconnected ones cost nothing: chance). It writes the
table file atomically after every finished training, so a killed build loses at most the runs in flight
and continues where it stopped (nothing is trained twice). ``--workers`` trains that many cells at once,
one thread each (a process per worker); ``--device cuda`` trains on a GPU, and ``--all --chunk I/K``
walks the whole space (all 6,466 classes) in K chunks, one per call. ``--hours`` stops it in time.

``report`` prints per table: cells complete, the seed-to-seed Kendall tau of the validation accuracy
over the connected cells and over the top 20% (by seed mean), the accuracies' spread (std over cells)
against the seed noise (mean per-cell std between seeds), and the Kendall tau against the NAS-Bench-201
CIFAR-10 table on the same cells; ``--markdown`` as a table for the docs.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unas_lightning.analysis.fmnist201 import (  # noqa: E402
    SHIPPED,
    Protocol,
    Split,
    add_result,
    complete,
    empty_table,
    hardware,
    train_cell,
)
from unas_lightning.spaces.nb201.genotype import NB201Genotype  # noqa: E402
from unas_lightning.utils.files import write_json_atomic  # noqa: E402

QUICK_PROTOCOL = {"channels": 4, "epochs": 1, "train_examples": 256, "batch_size": 64, "eval_examples": 500}


# -- the sample -------------------------------------------------------------------------------------------
def cifar10_top(n: int) -> list[NB201Genotype]:
    """The ``n`` best classes of the NAS-Bench-201 CIFAR-10 table (mean accuracy), one cell each."""
    from unas_lightning.spaces.nb201.table import NB201Table, cell_of_index

    acc = NB201Table("cifar10").mean_accuracies
    out: dict[str, NB201Genotype] = {}
    for i in acc.argsort(descending=True).tolist():
        g = cell_of_index(i)
        out.setdefault(g.unique_key(), g)
        if len(out) == n:
            break
    return list(out.values())


def sample_order(uniform: int, top: int, seed: int = 0) -> list[tuple[NB201Genotype, str]]:
    """The build order: ``top`` CIFAR-10-best classes interleaved with ``uniform`` uniform draws (no class twice)."""
    import torch

    cells = NB201Genotype.unique()
    perm = torch.randperm(len(cells), generator=torch.Generator().manual_seed(seed)).tolist()
    drawn = [(cells[i], "uniform") for i in perm[:uniform]]
    best = [(g, "cifar10_top") for g in cifar10_top(top)] if top else []
    order, seen = [], set()
    every = max(1, math.ceil(len(drawn) / max(1, len(best))))  # one top cell after every `every` drawn ones
    while drawn or best:
        for g, source in [*drawn[:every], *best[:1]]:
            if g.unique_key() not in seen:
                seen.add(g.unique_key())
                order.append((g, source))
        drawn, best = drawn[every:], best[1:]
    return order


# -- training in workers ----------------------------------------------------------------------------------
_SPLIT: Split | None = None


def _init_worker(protocol: dict, threads: int) -> None:
    import torch

    global _SPLIT
    torch.set_num_threads(threads)
    _SPLIT = Split.load(Protocol.from_dict(protocol))


def _train(job: tuple[str, int, dict, str]):
    arch, seed, protocol, device = job
    g = NB201Genotype.from_arch_str(arch)
    return arch, seed, train_cell(g, Protocol.from_dict(protocol), seed, _SPLIT, device)


def build(args) -> Path:
    out = Path(args.out)
    protocol = Protocol.from_dict({**(QUICK_PROTOCOL if args.quick else {}), **parse_overrides(args.protocol)})
    seeds = list(args.seeds)
    if out.is_file():
        table = json.loads(out.read_text())
        stored = Protocol.from_dict(table["protocol"])
        if (args.protocol or args.quick) and stored != protocol:
            raise SystemExit(f"{out} was built with another protocol ({table['protocol']}): give another --out.")
        protocol, seeds = stored, table["seeds"]
        print(f"resuming {out}: {sum(complete(r) for r in table['cells'].values())} cells complete", flush=True)
    else:
        table = empty_table(protocol, seeds)
    if args.all:
        order = [(g, "all") for g in NB201Genotype.unique()]
    else:
        order = sample_order(2 if args.quick else args.uniform, 0 if args.quick else args.top)
    if args.chunk:
        i, k = (int(v) for v in args.chunk.split("/"))
        order = order[(i - 1) * len(order) // k : i * len(order) // k]
    if args.max_cells:
        order = order[: args.max_cells]
    done = {(r["arch"], seeds[j]) for r in table["cells"].values() for j, v in enumerate(r["val_acc"]) if v is not None}
    sources = {g.to_arch_str(): source for g, source in order}
    by_class = {g.unique_key(): g.to_arch_str() for g, _ in order}
    jobs = []
    for g, _ in order:
        record = table["cells"].get(g.unique_key())
        arch = record["arch"] if record is not None else by_class[g.unique_key()]
        jobs += [(arch, s, protocol.__dict__, args.device) for s in seeds if (arch, s) not in done]
    print(
        f"{len(order)} cells x {len(seeds)} seeds; {len(jobs)} trainings to run on {args.workers} worker(s), "
        f"protocol {protocol.__dict__}",
        flush=True,
    )
    table["planned"] = len(order)  # the sample this build aims at: a table with fewer cells is partial
    if jobs:  # the machine that trains is the one the table records
        table["hardware"] = f"{hardware()}; {args.workers} worker(s) x {args.threads} thread(s)"
    write_json_atomic(out, table)
    deadline = time.monotonic() + 3600 * args.hours if args.hours else math.inf
    start, finished = time.monotonic(), 0
    for arch, seed, result in _results(jobs, protocol, args):
        g = NB201Genotype.from_arch_str(arch)
        add_result(table, g, seed, result, sources.get(arch, "uniform"))
        write_json_atomic(out, table)
        finished += 1
        elapsed = time.monotonic() - start
        print(
            f"[{finished}/{len(jobs)}] {arch} seed {seed}: val {result.val_acc:.2f} test {result.test_acc:.2f} "
            f"({result.train_seconds:.1f} s training; {elapsed / 60:.1f} min so far)",
            flush=True,
        )
        if time.monotonic() > deadline:
            print(f"--hours {args.hours} reached: stopping; run the same command to continue", flush=True)
            break
    return out


def _results(jobs: list, protocol: Protocol, args):
    """(arch, seed, CellResult) of every job, in order: in this process with one worker (a GPU), else in a
    pool of ``args.workers`` processes of ``args.threads`` threads each."""
    if args.workers == 1:
        _init_worker(protocol.__dict__, args.threads)
        yield from map(_train, jobs)
        return
    with mp.get_context("spawn").Pool(args.workers, _init_worker, (protocol.__dict__, args.threads)) as pool:
        yield from pool.imap(_train, jobs)


def parse_overrides(items: list[str]) -> dict:
    """``channels=8 image_size=16`` -> {"channels": 8, "image_size": 16} (numbers and booleans parsed)."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
    return out


# -- reliability ------------------------------------------------------------------------------------------
def reliability(path: Path) -> dict:
    """Seed-to-seed Kendall tau (all connected cells, top 20%), spread / noise, tau against CIFAR-10."""
    from unas_lightning.analysis.ranking import kendall_tau, top_indices
    from unas_lightning.spaces.nb201.table import NB201Table

    table = json.loads(Path(path).read_text())
    cells = [r for r in table["cells"].values() if complete(r) and NB201Genotype.from_arch_str(r["arch"]).connected()]
    out = {"table": str(path), "protocol": table["protocol"], "cells": len(cells), "seeds": table["seeds"]}
    if len(cells) < 5 or len(table["seeds"]) < 2:
        return out
    a = [r["val_acc"][0] for r in cells]
    b = [r["val_acc"][1] for r in cells]
    mean = [statistics.fmean(r["val_acc"]) for r in cells]
    top = top_indices(mean)  # the top 20% by the seeds' mean, as ranking_report selects by the truth
    noise = statistics.fmean(statistics.stdev(r["val_acc"]) for r in cells)
    cifar = NB201Table("cifar10")
    c10 = [cifar.accuracy(NB201Genotype.from_arch_str(r["arch"])) for r in cells]
    seconds = [s for r in cells for s in r["train_seconds"]]
    out.update(
        seed_tau=kendall_tau(a, b),
        seed_tau_top20=kendall_tau([a[i] for i in top], [b[i] for i in top]),
        spread=statistics.stdev(mean),
        noise=noise,
        tau_cifar10=kendall_tau(mean, c10),
        mean_val_acc=statistics.fmean(mean),
        best_val_acc=max(mean),
        median_train_seconds=statistics.median(seconds),
        hardware=table.get("hardware", ""),
    )
    return out


def report(args) -> None:
    rows = [reliability(Path(p)) for p in (args.tables or [SHIPPED])]
    if args.markdown:
        print(
            "| protocol | cells | seed tau | seed tau, top 20% | spread / noise (%) | tau vs CIFAR-10 | s / training |"
        )
        print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "seed_tau" not in r:
            print(f"{r['table']}: {r['cells']} complete cells: too few for the figures")
            continue
        p = r["protocol"]
        name = f"C={p['channels']}, N={p['cells_per_stage']}, {p['image_size']}px, "
        name += f"{p['epochs']} ep x {p['train_examples']}"
        if args.markdown:
            print(
                f"| {name} | {r['cells']} | {r['seed_tau']:.3f} | {r['seed_tau_top20']:.3f} | "
                f"{r['spread']:.2f} / {r['noise']:.2f} | {r['tau_cifar10']:.3f} | {r['median_train_seconds']:.0f} |"
            )
        else:
            print(json.dumps(r, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the sample (resumable)")
    b.add_argument("--out", default=str(SHIPPED), help="the table file (default: the one the package ships)")
    b.add_argument("--protocol", nargs="*", default=[], help="overrides of the protocol: channels=8 epochs=3 ...")
    b.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    b.add_argument("--uniform", type=int, default=300, help="classes drawn uniformly")
    b.add_argument("--top", type=int, default=50, help="best CIFAR-10 classes added")
    b.add_argument("--max-cells", type=int, default=0, help="only the first N cells of the order")
    b.add_argument("--all", action="store_true", help="every one of the 6,466 classes")
    b.add_argument("--chunk", default="", help="I/K: the I-th of K equal parts of the order (1-based)")
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--threads", type=int, default=1, help="threads per worker")
    b.add_argument("--device", default="cpu")
    b.add_argument("--hours", type=float, default=0.0, help="stop after this long (0: no limit)")
    b.add_argument("--quick", action="store_true", help="2 cells, a tiny protocol (a smoke test)")
    r = sub.add_parser("report", help="reliability figures of tables")
    r.add_argument("tables", nargs="*")
    r.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "build":
        if args.quick and args.out == str(SHIPPED):
            raise SystemExit("--quick writes a tiny table: give --out (the shipped table keeps its protocol).")
        build(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
