"""Latency on this machine: surrogate quality, target tracking, and a Table-3-style comparison.

    python benchmarks/latency.py --part a     # linear surrogate: held-out MAE/MAPE, collection time
    python benchmarks/latency.py --part b     # latency-target tracking of three short searches
    python benchmarks/latency.py --part c     # searched / published / torchvision networks (ImageNet size)
    python benchmarks/latency.py              # all (about 30 minutes on 2 CPU cores)
    python benchmarks/latency.py --quick      # all three at toy sizes (under a minute; checks the script)

(a) The ProxylessNAS space of configs/search/proxyless_latency_quick.yaml (width x0.25, 28x28 inputs,
    batch 32, 1 CPU thread): N architectures sampled uniformly and timed (median of 10 after 3 warm-up
    runs), the linear surrogate fitted by ridge regression on 80% and evaluated on 20%. Eager PyTorch
    for N = 200, 1000 and 60, ``torch.compile`` (each network compiles first, ~8 s on this CPU) for N = 60
    (``--a-runs``).
(b) Three searches of the quick config with the hinge latency penalty relu(latency/target - 1) at
    three targets (quantiles of the sampled latencies): the measured latency of the searched
    (most probable) architecture next to its target.
(c) At ImageNet size (3x224x224), one run: the searched network (``--genotype``, its ops in the
    ProxylessNAS-GPU backbone), ProxylessNAS-GPU and UNAS from the paper's space, and torchvision's
    mobilenet_v2, mobilenet_v3_large, mnasnet1_0, shufflenet_v2_x2_0, efficientnet_b0 (architectures
    only, random weights): median latency at batch 32 and 1, parameters, multiply-adds
    (``torch.utils.flop_counter``, FLOPs / 2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unas_lightning.costs import fit_linear_model, measure_latency  # noqa: E402
from unas_lightning.distributions import ArchDistribution  # noqa: E402
from unas_lightning.genotypes import load_genotype  # noqa: E402
from unas_lightning.spaces import ProxylessGenotype, ProxylessNet, ProxylessSpace  # noqa: E402
from unas_lightning.utils.network_size import count_parameters, multiply_adds  # noqa: E402

QUICK = ROOT / "configs" / "search" / "proxyless_latency_quick.yaml"


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def quick_space() -> ProxylessSpace:
    return ProxylessSpace(in_channels=1, num_classes=10, width_mult=0.25, stem_stride=1)


def time_archs(space: ProxylessSpace, n: int, backend: str, seed: int = 0, device: str = "cpu", repeats: int = 10):
    gen = torch.Generator().manual_seed(seed)
    logits = {k: torch.zeros_like(v) for k, v in space.arch.items()}
    archs, lat = [], []
    start = time.perf_counter()
    for _ in range(n):
        z = ArchDistribution(logits).sample(generator=gen)
        net = space.derived_network(space.genotype(z)).to(device)
        m = measure_latency(
            net, (1, 28, 28), batch_size=32, warmup=3, repeats=repeats, backend=backend, device=device, num_threads=1
        )
        archs.append(z)
        lat.append(m.median_ms)
    return archs, lat, time.perf_counter() - start


def part_a(args) -> list[float]:
    space = quick_space()
    rows, eager_latencies = [], []
    runs = [(b, int(n)) for b, n in (item.split(":") for item in args.a_runs.split(","))]
    for backend, n in runs:
        archs, lat, seconds = time_archs(space, n, backend, device=args.device, repeats=args.repeats)
        if backend == "eager" and not eager_latencies:
            eager_latencies = lat
        fit = fit_linear_model(archs, lat, holdout=0.2, alpha=1e-3)
        rows.append(
            {
                "backend": backend,
                "N": n,
                "latency ms (median, min-max)": f"{statistics.median(lat):.2f} ({min(lat):.2f}-{max(lat):.2f})",
                "held-out MAE ms": f"{fit.test_mae:.3f}",
                "held-out MAPE %": f"{fit.test_mape:.2f}",
                "train MAE ms": f"{fit.train_mae:.3f}",
                "collection s": f"{seconds:.0f}",
            }
        )
        print(f"  done: {backend} N={n}", file=sys.stderr, flush=True)
    where = "this GPU" if args.device.startswith("cuda") else "this CPU"
    print(f"## (a) Linear latency surrogate on {where}\n")
    threads = "" if args.device.startswith("cuda") else ", 1 thread"
    print(f"ProxylessNAS space x0.25, 1x28x28, batch 32{threads}; 80/20 split; ridge alpha 1e-3.\n")
    print(table(rows, list(rows[0])))
    print()
    return eager_latencies


def part_b(args, latencies: list[float]) -> None:
    from unas_lightning.cli.app import main as cli_main

    if not latencies:
        latencies = time_archs(quick_space(), 100, "eager")[1]
    q = statistics.quantiles(latencies, n=10)
    targets = [round(q[int(10 * f) - 1], 1) for f in args.b_quantiles]  # e.g. the 20%, 50%, 80% quantiles
    rows = []
    for target in targets:
        with tempfile.TemporaryDirectory() as tmp:
            cli_main(
                [
                    "fit", "--config", str(QUICK),
                    "--trainer.default_root_dir", tmp,
                    "--trainer.enable_progress_bar", "false",
                    "--trainer.max_epochs", str(args.b_epochs),
                    "--trainer.limit_train_batches", str(args.b_steps),
                    "--model.init_args.estimator.class_path", "unas_lightning.estimators.Reinforce",
                    "--model.init_args.costs.init_args.form", "hinge",
                    "--model.init_args.costs.init_args.target", str(target),
                    "--model.init_args.costs.init_args.weight", "5.0",
                    "--model.init_args.costs.init_args.calibration_archs", str(args.b_calibration),
                    "--model.init_args.costs.init_args.meter.init_args.repeats", str(args.repeats),
                ]
            )  # fmt: skip
            report = json.loads(next(Path(tmp).rglob("costs.json")).read_text())
        latency = report["costs"]["latency"]
        measured = latency["measured"]
        rows.append(
            {
                "target ms": f"{target:.1f}",
                "searched architecture ms": f"{measured:.2f}",
                "ratio": f"{measured / target:.2f}",
                "within 10% or below": "yes" if measured <= 1.1 * target else "no",
                "predicted ms": f"{latency['predicted']:.2f}",
                "MBConv layers": sum(op != "skip" for op in report["genotype"]["ops"]),
            }
        )
        print(f"  done: target {target}", file=sys.stderr, flush=True)
    print("## (b) Latency-target tracking\n")
    print(
        f"configs/search/proxyless_latency_quick.yaml, Reinforce for the accuracy term (one-hot steps only), hinge "
        f"latency penalty with lambda_lat 5, {args.b_epochs} epochs x {args.b_steps} steps (1 warm-up); targets at "
        f"the {'/'.join(f'{100 * f:.0f}' for f in args.b_quantiles)}% quantiles of uniformly sampled architectures.\n"
    )
    print(table(rows, list(rows[0])))
    print()


def part_c(args) -> None:
    import torchvision

    models: list[tuple[str, torch.nn.Module]] = []
    gpu = load_genotype("PROXYLESS_GPU")
    if args.genotype is not None:
        searched = load_genotype(args.genotype)
        if not isinstance(searched, ProxylessGenotype):
            raise SystemExit("--genotype must be a ProxylessNAS-space genotype.")
        models.append(("searched (this machine)", ProxylessNet(ProxylessGenotype(searched.ops, gpu.backbone))))
    models += [
        ("ProxylessNAS-GPU", ProxylessNet(gpu)),
        ("UNAS (paper, ProxylessNAS space)", ProxylessNet(load_genotype("UNAS_PROXYLESS"))),
    ]
    for name in ["mobilenet_v2", "mobilenet_v3_large", "mnasnet1_0", "shufflenet_v2_x2_0", "efficientnet_b0"]:
        models.append((name, getattr(torchvision.models, name)(weights=None)))
    rows = []
    shape = (3, 224, 224)
    for name, model in models:
        model = model.to(args.device)
        lat32 = measure_latency(model, shape, batch_size=args.c_batch, warmup=2, repeats=args.c_repeats)
        lat1 = measure_latency(model, shape, batch_size=1, warmup=5, repeats=5 * args.c_repeats)
        rows.append(
            {
                "network": name,
                f"latency b={args.c_batch} ms": f"{lat32.median_ms:.1f}",
                "latency b=1 ms": f"{lat1.median_ms:.2f}",
                "params M": f"{count_parameters(model) / 1e6:.2f}",
                "MACs M": f"{multiply_adds(model, shape) / 1e6:.0f}",
            }
        )
        print(f"  done: {name}", file=sys.stderr, flush=True)
    print(f"## (c) Searched and published networks at ImageNet size on this {args.device.split(':')[0].upper()}\n")
    threads, reps = torch.get_num_threads(), args.c_repeats
    print(
        f"3x224x224, eager PyTorch, {threads} threads, median of {reps} (b={args.c_batch}) and {5 * reps} (b=1) runs.\n"
    )
    print(table(rows, list(rows[0])))
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "c", "all"], default="all")
    parser.add_argument(
        "--a-runs", default="eager:200,eager:1000,eager:60,compile:60", help="(a) backend:N pairs to time and fit"
    )
    parser.add_argument("--b-epochs", type=int, default=3)
    parser.add_argument("--b-steps", type=int, default=40)
    parser.add_argument("--b-calibration", type=int, default=100, help="(b) networks timed to fit the surrogate")
    parser.add_argument(
        "--b-quantiles",
        type=lambda t: [float(x) for x in t.split(",")],
        default=[0.2, 0.5, 0.8],
        help="(b) latency targets: quantiles (tenths) of the sampled latencies",
    )
    parser.add_argument("--genotype", type=Path, default=None, help="(c) a searched ProxylessNAS genotype.json")
    parser.add_argument("--c-repeats", type=int, default=5)
    parser.add_argument("--c-batch", type=int, default=32, help="(c) the large batch")
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes (a: 24 networks, b: one short search, c: b=2; 3 timed runs)"
    )
    parser.add_argument("--device", default="cpu", help="(a), (c) where to time: cpu or cuda (CUDA events)")
    parser.add_argument("--repeats", type=int, default=10, help="(a), (b) timed runs per network (the median kept)")
    args = parser.parse_args(argv)
    if args.quick:
        args.a_runs, args.b_epochs, args.b_steps, args.b_calibration, args.repeats = "eager:24", 2, 2, 12, 3
        args.b_quantiles, args.c_repeats, args.c_batch = [0.5], 1, 2
    print(f"`python benchmarks/latency.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} CPU threads"
    print(f"(torch {torch.__version__}, {where})\n")
    latencies: list[float] = []
    if args.part in ("a", "all"):
        latencies = part_a(args)
    if args.part in ("b", "all"):
        part_b(args, latencies)
    if args.part in ("c", "all"):
        part_c(args)


if __name__ == "__main__":
    main()
