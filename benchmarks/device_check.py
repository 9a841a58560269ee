"""The device check: measured latency a search can trust, its predictors, and the search step, in one script.

    python benchmarks/device_check.py --out runs/device           # on a GPU: everything, about 8 minutes
    python benchmarks/device_check.py --parts protocol,predictors --device cpu --out runs/device_cpu  # CPU proxies
    python benchmarks/device_check.py --quick --out /tmp/dc       # CPU, toy sizes, under a minute (a test runs it)

GPU time is scarce (a lent machine, minutes at a time), so this is one prepared script with a time
budget (``--budget``, seconds): every part gets a slice, stops sampling when its slice is spent, and
records what it skipped. Results: ``device_check.json`` and ``device_check.md`` in ``--out``, with the
device's name, the date and the versions.

Parts (``--parts``, comma-separated; default all):

* ``protocol``: how the measurement itself behaves. Two reference networks (ProxylessNAS-GPU at
  ImageNet size, 3x224x224; DARTS-V2 as the CIFAR evaluation network, 36 channels x 20 cells, 32x32)
  timed at batch 32 (the paper's) and 1, eager / ``torch.compile`` / CUDA graphs, fp32 / bf16 autocast,
  and channels-last: each setting measured three times (median of ``--repeats`` runs after warm-up,
  CUDA events, ``cudnn.benchmark`` on); the spread of the three is the setting's noise.
* ``predictors``: architectures sampled uniformly from the ProxylessNAS space (ImageNet size) and the
  DARTS space (the CIFAR evaluation network), each timed twice (two passes, so drift counts as noise);
  the noise floor is the second measurement's error against the first (MAPE, share within +-10%),
  and each cost model (``costs.fit_cost_model``: the paper's additive one, pairwise, MLP, and the
  cross-validated choice) is fitted on 80% of the first measurements and judged on the other 20%.
  Goal: >= 95% of held-out predictions within +-10% and MAPE <= 1.2x the noise floor.
* ``step``: ``benchmarks/search_step.py`` at the DARTS search's scale (8 cells, width 16, batch 64,
  32x32): recommended UNAS, the paper's REBAR setting and DARTS first order in fp32, UNAS and DARTS
  under bf16 autocast and with channels-last: ms per step and peak memory (``max_memory_allocated``).
* ``table``: with the time left on a GPU, a chunk of the FMNIST-201 table (``benchmarks/fmnist201.py
  build --all --chunk``) into ``--out``, with the time per cell.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unas_lightning.costs import COST_MODELS, fit_cost_model, measure_latency  # noqa: E402
from unas_lightning.distributions import ArchDistribution  # noqa: E402
from unas_lightning.genotypes import load_genotype  # noqa: E402
from unas_lightning.spaces import DartsSpace, ProxylessGenotype, ProxylessNet, ProxylessSpace  # noqa: E402

PARTS = ("protocol", "predictors", "step", "table")
SLICES = {"protocol": 0.2, "predictors": 0.4, "step": 0.3, "table": 0.1}  # shares of the budget


class Clock:
    """The script's time budget: a deadline per part, from the budget left when the part starts."""

    def __init__(self, budget: float, parts: list[str]):
        self.start, self.budget = time.perf_counter(), budget
        self.parts = parts

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    def timeout(self) -> float | None:
        """A subprocess's timeout: the time left (at least 30 s), or None without a budget."""
        return None if self.budget == float("inf") else max(self.left(), 30.0)

    def slice_for(self, part: str) -> float:
        """Seconds this part may use: its share of the time left among the parts still to run."""
        rest = self.parts[self.parts.index(part) :]
        return self.left() * SLICES[part] / sum(SLICES[p] for p in rest)


def sizes(args) -> dict[str, Any]:
    """The networks' sizes (``--scale``): the real ones (``full``, a GPU's), the latency benchmark's CPU proxies
    (``proxy``: ProxylessNAS x0.25 and an 8-channel 5-cell DARTS network on 1x28x28, batch 32) or toy ones
    (``toy``, --quick)."""
    if args.scale == "full":
        return {
            "proxyless": {"in_channels": 3, "num_classes": 1000},
            "proxyless_shape": (3, 224, 224),
            "darts": {"in_channels": 3, "num_classes": 10, "channels": 36, "layers": 20},
            "darts_shape": (3, 32, 32),
            "batches": (32, 1),
        }
    proxy = args.scale == "proxy"  # else toy: the same spaces, smaller
    return {
        "proxyless": {"in_channels": 1, "num_classes": 10, "width_mult": 0.25, "stem_stride": 1},
        "proxyless_shape": (1, 28, 28),
        "darts": {"in_channels": 1, "num_classes": 10, "channels": 8 if proxy else 4, "layers": 5 if proxy else 3},
        "darts_shape": (1, 28, 28),
        "batches": (32 if proxy else 8, 1),
    }


def reference_networks(args) -> list[tuple[str, torch.nn.Module, tuple[int, ...]]]:
    s = sizes(args)
    gpu = load_genotype("PROXYLESS_GPU")
    if args.scale == "full":
        proxyless = ProxylessNet(gpu)  # 7.12M parameters, as published
    else:  # its operations in the scaled backbone
        backbone = ProxylessSpace(**s["proxyless"]).genotype().backbone
        classes = {k: s["proxyless"][k] for k in ("in_channels", "num_classes")}
        proxyless = ProxylessNet(ProxylessGenotype(gpu.ops, backbone), **classes)
    darts = DartsSpace(**s["darts"]).derived_network(load_genotype("DARTS_V2"))
    return [
        ("ProxylessNAS-GPU", proxyless, s["proxyless_shape"]),
        ("DARTS-V2", darts, s["darts_shape"]),
    ]


def timed(model, shape, args, batch: int, backend: str = "eager", precision: str = "fp32", channels_last=False):
    return measure_latency(
        model,
        shape,
        batch_size=batch,
        device=args.device,
        warmup=args.warmup,
        repeats=args.repeats,
        backend=backend,
        precision=precision,
        channels_last=channels_last,
        num_threads=args.threads if args.device == "cpu" else None,
    ).median_ms


def protocol(args, clock: Clock) -> dict:
    """Each setting three times: the median and the spread ((max - min) / median) of the three medians."""
    deadline = clock.elapsed() + clock.slice_for("protocol")
    cuda = args.device.startswith("cuda")
    backends = ["eager", "cudagraph", "compile"] if cuda else ["eager"] + (["compile"] if args.compile else [])
    rows, skipped = [], []
    for name, net, shape in reference_networks(args):
        net = net.to(args.device)
        for batch in sizes(args)["batches"]:
            for backend in backends:
                for precision in ("fp32", "bf16"):
                    for channels_last in (False, True) if backend == "eager" and batch > 1 else (False,):
                        setting = f"{name} b={batch} {backend} {precision}{' channels-last' if channels_last else ''}"
                        skip_compile = backend == "compile" and (batch == 1 or name != "ProxylessNAS-GPU")
                        if skip_compile or clock.elapsed() > deadline:
                            skipped.append(setting)  # compile: one network at batch 32 only (minutes each)
                            continue
                        try:
                            times = [
                                timed(net, shape, args, batch, backend, precision, channels_last) for _ in range(3)
                            ]
                        except Exception as err:  # a setting the device or build cannot run is recorded
                            rows.append({"setting": setting, "error": f"{type(err).__name__}: {err}"[:300]})
                            continue
                        med = statistics.median(times)
                        rows.append(
                            {
                                "setting": setting,
                                "network": name,
                                "batch": batch,
                                "backend": backend,
                                "precision": precision,
                                "channels_last": channels_last,
                                "median_ms": med,
                                "spread_pct": 100 * (max(times) - min(times)) / med,
                            }
                        )
                        print(f"  protocol: {setting}: {med:.3f} ms", file=sys.stderr, flush=True)
        net.cpu()
    return {"rows": rows, "skipped": skipped}


def sample_archs(space, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    uniform = {k: torch.zeros_like(v) for k, v in space.arch.items()}
    return [ArchDistribution(uniform).sample(generator=gen) for _ in range(n)]


def predictors(args, clock: Clock) -> dict:
    """Per space and setting: the noise floor and every cost model's held-out error."""
    s = sizes(args)
    spaces = {
        "proxyless": (ProxylessSpace(**s["proxyless"]), s["proxyless_shape"]),
        "darts": (DartsSpace(**s["darts"]), s["darts_shape"]),
    }
    settings = [("eager", "fp32")] + ([("cudagraph", "fp32")] if args.device.startswith("cuda") else [])
    budget = clock.slice_for("predictors") / (len(spaces) * len(settings))
    out = []
    for space_name, (space, shape) in spaces.items():
        for backend, precision in settings:
            start = time.perf_counter()
            archs = sample_archs(space, args.archs, args.seed)
            nets, first = [], []
            for arch in archs:  # first pass, at most half the slice
                if time.perf_counter() - start > budget / 2 and len(first) >= 10:
                    break
                net = space.derived_network(space.genotype(arch)).to(args.device)
                first.append(timed(net, shape, args, s["batches"][0], backend, precision))
                nets.append(net if args.device.startswith("cuda") else net.cpu())
            archs = archs[: len(first)]
            second = [timed(net, shape, args, s["batches"][0], backend, precision) for net in nets]
            del nets
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            measured = time.perf_counter() - start
            noise = [abs(b - a) / a for a, b in zip(first, second, strict=True)]
            row: dict[str, Any] = {
                "space": space_name,
                "backend": backend,
                "precision": precision,
                "batch": s["batches"][0],
                "archs": len(first),
                "latency_ms_median": statistics.median(first),
                "latency_ms_range": [min(first), max(first)],
                "noise_mape": 100 * statistics.fmean(noise),
                "noise_within10": 100 * sum(e <= 0.1 for e in noise) / len(noise),
                "measure_s": measured,
                "models": {},
            }
            for kind in (*COST_MODELS, "auto"):
                t0 = time.perf_counter()
                fit = fit_cost_model(
                    archs, first, kind=kind, holdout=0.2, alpha=1e-3, seed=args.seed, mlp_steps=args.mlp_steps
                )
                row["models"][kind] = {
                    "chosen": fit.kind,
                    "mape": fit.test_mape,
                    "within10": fit.test_within10,
                    "mape_over_noise": fit.test_mape / max(row["noise_mape"], 1e-9),
                    "fit_s": time.perf_counter() - t0,
                }
            out.append(row)
            best = min(row["models"].items(), key=lambda kv: kv[1]["mape"])
            print(
                f"  predictors: {space_name} {backend}: {len(first)} archs, noise {row['noise_mape']:.2f}%, "
                f"best {best[0]} {best[1]['mape']:.2f}% ({best[1]['within10']:.0f}% within 10%)",
                file=sys.stderr,
                flush=True,
            )
    return {"rows": out}


def step(args, clock: Clock) -> dict:
    """benchmarks/search_step.py per precision / layout; its JSON rows. Each configuration runs in a process
    of its own (a fresh device, a crash or hang cut off by the budget); ``--quick`` runs them in this one,
    as search_step's own --quick runs its methods: it checks the script, not the timings."""
    if args.quick:
        scale = ["--quick", "--steps", "1"]
        configs = [("fp32", [], "unas,darts1,floor"), ("bf16", ["--precision", "bf16-mixed"], "unas")]
    else:
        scale = ["--layers", "8", "--channels", "16", "--batch-size", "64", "--image-size", "32", "--stem-stride", "1"]
        scale += ["--steps", "5", "--warmup", "2", "--rounds", "1"]
        configs = [
            ("fp32", [], "unas,unas_paper,darts1"),
            ("bf16", ["--precision", "bf16-mixed"], "unas,darts1"),
            ("channels-last", ["--channels-last"], "unas,darts1"),
        ]
    deadline = clock.elapsed() + clock.slice_for("step")
    out, skipped = [], []
    for name, extra, methods in configs:
        if clock.elapsed() > deadline:
            skipped.append(name)
            continue
        path = Path(args.out) / f"step_{name}.json"
        step_args = [*scale, *extra, "--methods", methods, "--json", str(path)]
        step_args += ["--device", "cpu"] if args.device == "cpu" else []
        if args.quick:
            with contextlib.redirect_stdout(sys.stderr):  # its table: the JSON rows are what this part keeps
                _search_step().main(step_args)
        else:
            cmd = [sys.executable, str(ROOT / "benchmarks" / "search_step.py"), *step_args]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=clock.timeout())
            except subprocess.TimeoutExpired:
                out.append({"config": name, "error": "timed out (the budget ran out)"})
                continue
            if proc.returncode != 0 or not path.exists():
                out.append({"config": name, "error": proc.stderr[-1500:]})
                continue
        out.append({"config": name, **json.loads(path.read_text())})
        print(f"  step: {name} done", file=sys.stderr, flush=True)
    return {"rows": out, "skipped": skipped}


def _search_step() -> Any:
    """benchmarks/search_step.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_step", ROOT / "benchmarks" / "search_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_chunk(args, clock: Clock) -> dict:
    """A chunk of the FMNIST-201 table on the GPU with the time left (CUDA only)."""
    seconds = clock.left() - 20
    if not args.device.startswith("cuda") or seconds < 60:
        return {"skipped": f"needs CUDA and a minute; {seconds:.0f} s left on {args.device}"}
    out = Path(args.out) / "fmnist201_chunk.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fmnist201.py"), "build", "--all", "--chunk", args.table_chunk]
    cmd += ["--device", args.device, "--workers", str(args.table_workers), "--hours", f"{seconds / 3600:.4f}"]
    cmd += ["--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 60)
    wall = time.perf_counter() - start
    cells = len(json.loads(out.read_text()).get("cells", {})) if out.exists() else 0
    trainings = 2 * cells
    return {
        "chunk": args.table_chunk,
        "cells": cells,
        "wall_s": wall,
        "s_per_training": wall / trainings if trainings else None,
        "rc": proc.returncode,
        "tail": proc.stderr[-800:],
    }


def markdown(result: dict) -> str:
    lines = [
        f"# Device check: {result['device']}",
        "",
        f"{result['date']}, torch {result['torch']}, {result['command']}",
        "",
    ]
    proto = result.get("protocol")
    if proto:
        lines += ["## Latency measurement (median of 3 measurements; spread = (max - min) / median)", ""]
        lines += ["| setting | median ms | spread % |", "|---|---|---|"]
        for r in proto["rows"]:
            if "error" in r:
                lines.append(f"| {r['setting']} | error: {r['error'][:80]} | |")
            else:
                lines.append(f"| {r['setting']} | {r['median_ms']:.3f} | {r['spread_pct']:.1f} |")
        if proto["skipped"]:
            lines += ["", f"Skipped: {', '.join(proto['skipped'])}."]
        lines.append("")
    pred = result.get("predictors")
    if pred:
        lines += ["## Latency predictors (held-out 20%; noise floor: a second measurement against the first)", ""]
        head = "| space | setting | archs | latency ms (median) | noise MAPE % | noise within 10% |"
        head += "".join(f" {k} MAPE % / within 10% |" for k in (*COST_MODELS, "auto"))
        lines += [head, "|" + "---|" * (6 + len(COST_MODELS) + 1)]
        for r in pred["rows"]:
            cells = "".join(
                f" {m['mape']:.2f} / {m['within10']:.0f}{' (' + m['chosen'] + ')' if k == 'auto' else ''} |"
                for k, m in r["models"].items()
            )
            lines.append(
                f"| {r['space']} | {r['backend']} {r['precision']} b={r['batch']} | {r['archs']} | "
                f"{r['latency_ms_median']:.3f} | {r['noise_mape']:.2f} | {r['noise_within10']:.0f} |{cells}"
            )
        lines.append("")
    st = result.get("step")
    if st:
        lines += ["## Search step (benchmarks/search_step.py)", "", "| config | method | ms / step | peak MiB |"]
        lines.append("|---|---|---|---|")
        for r in st["rows"]:
            if "error" in r:
                lines.append(f"| {r['config']} | error | | |")
                continue
            for m in r["rows"]:
                lines.append(f"| {r['config']} | {m['method']} | {m['ms_per_step']:.1f} | {m['peak_mib']:.0f} |")
        if st["skipped"]:
            lines += ["", f"Skipped (time): {', '.join(st['skipped'])}."]
        lines.append("")
    tab = result.get("table")
    if tab:
        lines += ["## FMNIST-201 chunk", "", f"`{json.dumps(tab)[:400]}`", ""]
    lines.append(f"Total {result['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/device_check")
    parser.add_argument(
        "--scale",
        choices=["full", "proxy", "toy"],
        default=None,
        help="network sizes (default: full on CUDA, else proxy)",
    )
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all parts together")
    parser.add_argument("--archs", type=int, default=400, help="(predictors) at most this many per space and setting")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads while timing on the CPU")
    parser.add_argument("--compile", action="store_true", help="(protocol, CPU) time torch.compile too")
    parser.add_argument("--table-chunk", default="1/40", help="(table) the I/K chunk of the 6,466 classes")
    parser.add_argument("--table-workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mlp-steps", type=int, default=1000, help="(predictors) Adam steps of the MLP cost model")
    parser.add_argument("--quick", action="store_true", help="CPU, toy sizes: checks the script (the test suite)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {list(PARTS)}")
    if args.quick:
        args.device, args.archs, args.warmup, args.repeats, args.scale = "cpu", 20, 1, 3, "toy"
        args.mlp_steps = 200
        args.budget = float("inf")  # toy sizes, nothing skipped for time: the run checks the script, not the device
        parts = [p for p in parts if p != "table"]
    if args.scale is None:
        args.scale = "full" if args.device.startswith("cuda") else "proxy"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    device = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else (f"CPU ({platform.processor() or platform.machine()}, {args.threads} thread(s) while timing)")
    )
    clock = Clock(args.budget, parts)
    result: dict[str, Any] = {
        "device": device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "command": "python benchmarks/device_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "budget_s": None if args.budget == float("inf") else args.budget,
        "scale": args.scale,
        "sizes": sizes(args),
    }
    runners = {"protocol": protocol, "predictors": predictors, "step": step, "table": table_chunk}
    for part in parts:
        print(f"{part} ({clock.left():.0f} s left)", file=sys.stderr, flush=True)
        result[part] = runners[part](args, clock)
        result["seconds"] = clock.elapsed()
        (Path(args.out) / "device_check.json").write_text(json.dumps(result, indent=1) + "\n")  # after every part
    result["seconds"] = clock.elapsed()
    (Path(args.out) / "device_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (Path(args.out) / "device_check.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
