"""Cost of one search step, side by side: UNAS vs DARTS first order vs Gumbel-softmax vs the floor.

    python benchmarks/search_step.py                       # CPU here, or the GPU when one is present
    python benchmarks/search_step.py --steps 30 --rounds 3 --batch-size 64 --channels 16
    python benchmarks/search_step.py --quick               # unas, darts1, floor: 2 steps, 1 round (checks the script)
    python benchmarks/search_step.py --precision bf16-mixed --channels-last --json step.json   # measured options
    # the CIFAR search's scale: 8 cells, width 16, batch 64, 32x32 input (Fashion-MNIST padded)
    python benchmarks/search_step.py --layers 8 --channels 16 --batch-size 64 --image-size 32 --stem-stride 1 \
        --steps 3 --warmup 1 --rounds 1 --methods unas,unas_paper,unas_paper_ckpt,darts1,floor

Every method runs the same supernet (the quickstart DARTS space unless changed) on the same real
Fashion-MNIST batches, through ``SearchModule`` and a Lightning ``Trainer`` as a user runs it:

* ``unas``: UNAS as we recommend running it: ``Rebar`` (independent zeta~) + L_gen (train and val batch), one
  architecture per step, one-hot w-step, REBAR's relaxed control variate on the first
  ``--cv-examples`` examples of each batch (``SearchModule(cv_examples=...)``: unbiased, cheaper)
  with its scale eta and baseline beta self-tuned in closed form (free; a sub-batch control variate
  needs a scale below 1, see the estimator benchmark (b) for the variance);
* ``unas_paper``: the paper's setting as the official code runs it: ``Rebar(conditional="coupled")``
  (tau 0.4, eta 1) with the control variate on the whole batch, zeta~ coupled to zeta (one relaxed
  evaluation for both terms);
* ``unas_paper_indep``: the same with an independent zeta~ (``Rebar()``, the default: two relaxed
  evaluations, 3-5x less variance);
* ``unas_paper_wrelaxed``: the paper's setting with w trained on a relaxed sample at tau 0.4
  (``w_step_arch=RelaxedSample(0.4)``, the official code) instead of a one-hot one;
* ``unas_example``: the paper's setting with one architecture per example (the official code's
  CIFAR mode);
* ``rloo``: the same objective with ``Reinforce(num_samples=3)`` (unbiased, one-hot evaluations only);
* ``darts1``: DARTS first order: ``Softmax`` on L_val, the w-step on the softmax(phi) mixture;
* ``gumbel``: SNAS-style ``GumbelSoftmax`` on L_train, the w-step on the relaxed sample;
* ``floor``: one forward and backward of a single sampled one-hot architecture (no Lightning);
* any method with ``_ckpt`` appended (``unas_paper_ckpt``): the same on
  ``DartsSpace(checkpoint_relaxed=True)``, each relaxed cell's activations recomputed in the backward
  pass instead of held (the memory at real scale).

``--precision bf16-mixed`` runs every method under bf16 autocast (Lightning's precision plugin; the floor
under ``torch.autocast``), ``--channels-last`` puts the supernet and its inputs in the channels-last
memory format; ``--json PATH`` writes the table's rows.

Each (method, round) runs in a fresh process (``--quick``: all in this one, to check the script) and
the rounds are interleaved, so drift hits every method alike. Time per step is the median over all
timed steps of all rounds (wall time of ``training_step``, host-synchronised on GPU); memory is the
peak above the memory held before the timed steps and the peak in all (CUDA allocator on GPU; on CPU
the process's resident set, which includes the data set and the libraries). The last line reads
``ratios: unas/darts1=X.XX unas/floor=Y.YY``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = [
    "unas",
    "unas_paper",
    "unas_paper_indep",
    "unas_example",
    "rloo",
    "darts1",
    "gumbel",
    "floor",
]
LABELS = {
    "unas": "UNAS: Rebar (self-tuning eta, beta) + L_gen, control variate on cv_examples",
    "unas_paper": "UNAS, paper setting as the official code: Rebar (tau 0.4, eta 1, zeta~ coupled) + L_gen",
    "unas_paper_indep": "UNAS, paper setting, zeta~ independent (Rebar(), the default; two relaxed evaluations)",
    "unas_paper_wrelaxed": "UNAS, paper setting, w-step on a relaxed sample (tau 0.4)",
    "unas_example": "UNAS, paper setting, one architecture per example",
    "rloo": "UNAS objective with RLOO (Reinforce, k = 3) + L_gen",
    "darts1": "DARTS first order: Softmax on L_val, mixture w-step",
    "gumbel": "SNAS: GumbelSoftmax on L_train, relaxed w-step",
    "floor": "floor: forward + backward of one sampled architecture",
}


def _label(method: str) -> str:
    base = method.removesuffix("_ckpt")
    return LABELS[base] + (", relaxed cells checkpointed" if base != method else "")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Memory:
    """Peak memory above the level at ``start()``: CUDA allocator, or the process's resident set."""

    def __init__(self, device):
        self.device = device

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            try:  # reset the kernel's peak-RSS counter (Linux)
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            self.base = _rss_mib()

    def peak(self) -> float:
        """Peak above the start level (MiB)."""
        return self.total() - self.base

    def total(self) -> float:
        """Peak in all (MiB): the allocator's peak, or the process's peak resident set since ``start()``."""
        import torch

        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return _peak_rss_mib()


def _space(args, checkpoint_relaxed: bool = False):
    from unas_lightning.spaces import DartsSpace

    return DartsSpace(
        in_channels=1,
        num_classes=10,
        channels=args.channels,
        layers=args.layers,
        nodes=4,
        ops="paper",
        stem_stride=args.stem_stride,
        fuse_relaxed=not args.no_fuse,
        checkpoint_relaxed=checkpoint_relaxed,
    )


def _pad(x, args):
    """Fashion-MNIST's 28x28 images zero-padded to ``--image-size`` (32: the CIFAR search's input size)."""
    import torch.nn.functional as F

    p = (args.image_size - x.shape[-1]) // 2
    return F.pad(x, (p, args.image_size - x.shape[-1] - p) * 2) if args.image_size != x.shape[-1] else x


def _layout(x, args):
    """``x`` in the channels-last memory format with ``--channels-last``."""
    import torch

    return x.contiguous(memory_format=torch.channels_last) if args.channels_last else x


def _data(args):
    from unas_lightning import FashionMNISTDataModule

    class Padded(FashionMNISTDataModule):
        def on_after_batch_transfer(self, batch, dataloader_idx):
            return {k: (_layout(_pad(x, args), args), y) for k, (x, y) in batch.items()}

    n = 2 * args.batch_size * (args.warmup + args.steps + 2)
    return Padded(split="search", batch_size=args.batch_size, max_train_examples=n)


def _module(method: str, args):
    from unas_lightning import SearchModule
    from unas_lightning.estimators import GumbelSoftmax, Rebar, Reinforce, Softmax
    from unas_lightning.search.w_step import RelaxedSample

    checkpointed = method.endswith("_ckpt")
    method = method.removesuffix("_ckpt")
    space = _space(args, checkpoint_relaxed=checkpointed)
    if method == "unas":  # a sub-batch control variate needs its scale eta tuned (closed form: free)
        est = Rebar(self_tuning=True, tune_temperature=False, tune_lr=0.05)
        return SearchModule(space, est, objective="gen", cv_examples=args.cv_examples)
    if method in ("unas_paper", "unas_paper_indep", "unas_paper_wrelaxed", "unas_example"):
        arch_samples = "example" if method == "unas_example" else "batch"
        est = Rebar(conditional="independent" if method == "unas_paper_indep" else "coupled")
        w_arch = RelaxedSample(0.4) if method == "unas_paper_wrelaxed" else "discrete"
        return SearchModule(space, est, objective="gen", arch_samples=arch_samples, w_step_arch=w_arch)
    if method == "rloo":
        return SearchModule(space, Reinforce(num_samples=3), objective="gen")
    if method == "darts1":
        return SearchModule(space, Softmax(), objective="val", w_step_arch="softmax")
    if method == "gumbel":
        return SearchModule(space, GumbelSoftmax(), objective="train", w_step_arch="relaxed")
    raise ValueError(method)


def _row(method: str, times: list[float], memory: _Memory, device) -> dict:
    """A worker's JSON row: step times, peak memory above the start and in all, the device."""
    return {
        "method": method,
        "times": times,
        "peak_mib": memory.peak(),
        "total_mib": memory.total(),
        "device": str(device),
    }


def worker(method: str, args) -> dict:
    """Time ``args.steps`` steps of one method after ``args.warmup`` untimed ones; returns a JSON row."""
    import lightning as L
    import torch
    import torch.nn.functional as F

    L.seed_everything(args.seed, verbose=False)
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    memory = _Memory(device)
    times: list[float] = []

    if method == "floor":
        from unas_lightning.distributions import ArchDistribution

        dm = _data(args)
        dm.setup("fit")
        loader = dm.train_dataloader()
        space = _space(args).to(device)
        if args.channels_last:
            space.to(memory_format=torch.channels_last)
        bf16 = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
        for i, item in enumerate(loader):
            batch = item[0] if isinstance(item, tuple) else item  # CombinedLoader: (batch, idx, loader idx)
            if i == args.warmup:
                memory.start()
            x, y = (t.to(device) for t in batch["train"])
            x = _layout(_pad(x, args), args)
            _sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                z = ArchDistribution(dict(space.arch)).sample()
            space.zero_grad(set_to_none=True)
            with bf16:
                loss = F.cross_entropy(space(x, z), y)
            loss.backward()
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
            if i + 1 == args.warmup + args.steps:
                break
        return _row(method, times, memory, device)

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == args.warmup:
                memory.start()
            _sync(device)
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            _sync(device)
            if batch_idx >= args.warmup:
                times.append(time.perf_counter() - self.t0)

    module = _module(method, args)
    module.warmup_epochs = 0
    if args.channels_last:
        module.to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory(prefix="unas_step_") as root:  # genotype.json goes there, not into the cwd
        trainer = L.Trainer(
            accelerator=device.type,
            devices=1,
            max_epochs=1,
            limit_train_batches=args.warmup + args.steps,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[StepTimer()],
            default_root_dir=root,
            precision=args.precision,
        )
        trainer.fit(module, datamodule=_data(args))
    return _row(method, times, memory, device)


def main(argv: list[str] | None = None) -> None:
    """The benchmark with command-line arguments ``argv`` (default: ``sys.argv[1:]``)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (fresh processes)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--stem-stride", type=int, default=2, help="1: the CIFAR search's full-resolution stem")
    parser.add_argument("--image-size", type=int, default=28, help="pad the 28x28 images to this size")
    parser.add_argument("--cv-examples", type=int, default=4, help="cv_examples of the unas method")
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    parser.add_argument("--no-fuse", action="store_true", help="relaxed cells edge by edge (fuse_relaxed=False)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--channels-last", action="store_true", help="supernet and inputs in channels-last format")
    parser.add_argument("--json", type=Path, default=None, help="also write the table's rows to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="unas, darts1 and floor, 1 round of 2 timed steps, in this process (checks the script)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds = 2, 1, 1
        if not any(a.startswith("--methods") for a in argv):
            args.methods = "unas,darts1,floor"
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)))
        return

    methods = args.methods.split(",")
    times = {m: [] for m in methods}
    peaks = {m: [] for m in methods}
    totals = {m: [] for m in methods}
    device = "?"
    passthrough, skip = [], False
    for a in argv:  # everything but --methods goes to the workers
        if skip or a.startswith("--methods"):
            skip = a == "--methods" and not skip
            continue
        passthrough.append(a)
    for r in range(args.rounds):
        for m in methods:
            if args.quick:  # checks the script, not the timings: every method in this process
                row = worker(m, argparse.Namespace(**{**vars(args), "seed": args.seed + r}))
            else:
                cmd = [sys.executable, __file__, *passthrough, "--worker", m, "--seed", str(args.seed + r)]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    sys.exit(f"{m} failed:\n{proc.stderr[-3000:]}")
                row = json.loads(lines[-1][len("RESULT ") :])
            times[m] += row["times"]
            peaks[m].append(row["peak_mib"])
            totals[m].append(row["total_mib"])
            device = row["device"]
            print(
                f"round {r + 1}/{args.rounds} {m:13s} median {1e3 * statistics.median(row['times']):8.1f} ms",
                file=sys.stderr,
            )

    import torch

    med = {m: statistics.median(times[m]) for m in methods}
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"`python benchmarks/search_step.py {' '.join(passthrough)}` ({where}; DARTS space "
        f"{args.channels} channels x {args.layers} cells, 4 nodes, 7 ops, stem stride {args.stem_stride}, "
        f"{args.image_size}x{args.image_size} input, relaxed cells "
        f"{'edge by edge' if args.no_fuse else 'fused'}; batch {args.batch_size}, cv_examples {args.cv_examples}; "
        f"{args.rounds} rounds x {args.steps} steps)\n"
    )
    print(
        "| method | ms / step (median) | IQR (ms) | vs DARTS 1st order | vs floor "
        "| peak memory (MiB) | peak in all (MiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    rows = []
    for m in methods:
        q = statistics.quantiles(times[m], n=4) if len(times[m]) > 1 else [med[m]] * 3
        ratio_d = f"{med[m] / med['darts1']:.2f}x" if "darts1" in med else ""
        ratio_f = f"{med[m] / med['floor']:.2f}x" if "floor" in med else ""
        row = {
            "method": m,
            "ms_per_step": 1e3 * med[m],
            "iqr_ms": 1e3 * (q[2] - q[0]),
            "peak_mib": statistics.median(peaks[m]),
            "total_mib": statistics.median(totals[m]),
        }
        rows.append(row)
        print(
            f"| {_label(m)} | {row['ms_per_step']:.1f} | {row['iqr_ms']:.1f} | {ratio_d} | {ratio_f} | "
            f"{row['peak_mib']:.0f} | {row['total_mib']:.0f} |"
        )
    if args.json is not None:
        settings = {"precision": args.precision, "channels_last": args.channels_last, "device": where}
        settings.update({k: getattr(args, k) for k in ("batch_size", "channels", "layers", "image_size", "steps")})
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    if {"unas", "darts1", "floor"} <= set(med):
        print(f"\nratios: unas/darts1={med['unas'] / med['darts1']:.2f} unas/floor={med['unas'] / med['floor']:.2f}")


if __name__ == "__main__":
    main()
