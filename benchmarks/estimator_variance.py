"""Bias, variance and optimization quality of every estimator (markdown tables for the README).

    python benchmarks/estimator_variance.py                 # all three parts (about 25 minutes on 2 CPU cores)
    python benchmarks/estimator_variance.py --part a        # (a) toys: bias and variance, exact gradients
    python benchmarks/estimator_variance.py --part b        # (b) DARTS supernet on Fashion-MNIST
    python benchmarks/estimator_variance.py --part c        # (c) RELAX-paper toy optimization, 10k steps
    python benchmarks/estimator_variance.py --quick         # every part at toy sizes (seconds; for tests)

(a) Exactly enumerable factorial categoricals: the REBAR/RELAX papers' f(b) = (b - 0.45)^2 as a
    2-category variable, and a 4-variable problem (5 categories each, 625 architectures) with a loss
    that is non-linear across variables. Each estimator first adapts for ``--warmup`` draws, then
    ``--draws`` estimates give the bias z-score (max over coordinates of |mean - exact| / s.e.) and the
    log of the mean per-coordinate variance, also normalised by loss evaluations:
    log(var x evals) is the log-variance at a budget of one evaluation per estimate.
(b) The real search objective L_gen on the factorized DARTS supernet (quickstart size) at a fixed
    partly-trained checkpoint (trained here on Fashion-MNIST unless ``--checkpoint`` points to a
    ``last.ckpt`` of a quickstart search), on one fixed pair of train/val batches: per-parameter
    variance relative to Reinforce (median over phi coordinates of var / var_Reinforce, and the ratio
    of total variances), the same at equal loss evaluations, and wall time per estimate.
(c) Optimization of E[f(b)], f(b) = (b - 0.499)^2, theta_0 = 0 (p = 0.5), one sample per step, Adam
    lr 0.01, ``--steps`` steps, ``--seeds`` seeds: final expected loss (mean over seeds) next to the
    exact-gradient run, and the log-variance of the estimator along the run (mean over 10 checkpoints
    of log var, 200 draws each from a frozen copy of the estimator).
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unas_lightning.estimators import (  # noqa: E402
    Estimator,
    GumbelSoftmax,
    IndeCateR,
    Rebar,
    Reinforce,
    ReinMax,
    Relax,
    Softmax,
    StraightThroughGumbel,
)
from unas_lightning.estimators.testing import exact_gradient, sample_gradients  # noqa: E402


def evaluations(est: Estimator, logits: dict[str, torch.Tensor]) -> int:
    """Loss evaluations per estimate (relaxed evaluations count like discrete ones; g does not)."""
    k = getattr(est, "num_samples", 1)
    if isinstance(est, IndeCateR):
        return 1 + sum((v.shape[-1] - 1) * v[..., 0].numel() for v in logits.values())
    if isinstance(est, Rebar):  # L(z), then c at zeta and zeta~: one relaxed evaluation when coupled
        return (2 if est.conditional == "coupled" else 3) * k
    return k


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# -- (a) toys ------------------------------------------------------------------------------------------
def bernoulli_toy(target: float = 0.45):
    logits = {"b": torch.tensor([0.0, 0.0])}
    return logits, lambda a: (a["b"][..., 1] - target) ** 2


def factorial_toy(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = {"x": 0.5 * torch.randn(4, 5, generator=g)}
    w = torch.randn(4, 5, generator=g)
    v = torch.randn(5, 5, generator=g)

    def loss_fn(a):
        x = a["x"]
        s = (w * x).sum()
        pair = x[0] @ v @ x[1] - x[2] @ v @ x[3]
        return (s - 0.5) ** 2 + torch.tanh(2 * pair) + 0.3 * torch.sin(3 * x[1, 2] * x[3, 0])

    return logits, loss_fn


def toy_estimators() -> list[tuple[str, Callable[[], Estimator]]]:
    return [
        ("Reinforce, no baseline (Eq. 1)", lambda: Reinforce(use_baseline=False)),
        ("Reinforce, EMA baseline", Reinforce),
        ("RLOO k=2", lambda: Reinforce(num_samples=2)),
        ("RLOO k=3", lambda: Reinforce(num_samples=3)),
        ("Rebar (paper: tau=0.4, eta=1)", Rebar),
        ("Rebar self-tuning eta, beta (closed form)", lambda: Rebar(self_tuning=True, tune_temperature=False)),
        ("Rebar self-tuning eta, beta, tau", lambda: Rebar(self_tuning=True)),
        ("Relax (linear g, regression)", Relax),
        ("Relax (linear g, self-tuning + variance fit)", lambda: Relax(fit="both", self_tuning=True)),
        ("IndeCateR", IndeCateR),
        ("GumbelSoftmax (tau=1)", GumbelSoftmax),
        ("StraightThroughGumbel (tau=1)", StraightThroughGumbel),
        ("ReinMax (tau=1)", ReinMax),
        ("Softmax (DARTS)", Softmax),
    ]


def part_a(args) -> None:
    print("## (a) Bias and variance on exactly enumerable toys\n")
    print(f"{args.warmup} adaptation draws, then {args.draws} estimates per estimator; seed 0.\n")
    for title, (logits, loss_fn) in [
        ("f(b) = (b - 0.45)^2, b a 2-category variable, p(b=1) = 0.5", bernoulli_toy()),
        ("4 variables x 5 categories (625 architectures), non-linear loss", factorial_toy()),
    ]:
        exact = exact_gradient(logits, loss_fn)
        rows = []
        for name, make in toy_estimators():
            torch.manual_seed(0)
            est = make()
            sample_gradients(est, logits, loss_fn, n=args.warmup)
            samples = sample_gradients(est, logits, loss_fn, n=args.draws).double()
            var = samples.var(0).mean().item()
            se = samples.std(0) / math.sqrt(samples.shape[0])
            err = (samples.mean(0) - exact.double()).abs()
            z = (err / se).max().item() if var > 0 else float("inf") if err.max() > 1e-6 else 0.0
            e = evaluations(est, logits)
            rows.append(
                {
                    "estimator": name,
                    "evals": e,
                    "max abs z (bias)": f"det. (rel. err {(err.norm() / exact.norm()).item():.2f})"
                    if var == 0
                    else f"{z:.1f}",
                    "log var": f"{math.log(var):.2f}" if var > 0 else "-inf",
                    "log(var x evals)": f"{math.log(var * e):.2f}" if var > 0 else "-inf",
                }
            )
        print(f"### {title}\n")
        print(table(rows, ["estimator", "evals", "max abs z (bias)", "log var", "log(var x evals)"]))
        print()
    print("|z| above ~4.5 flags a bias (the relaxations); 'det.' marks a deterministic estimator.\n")


# -- (b) the DARTS supernet -------------------------------------------------------------------------------
def partly_trained_supernet(args):
    """The quickstart supernet with w trained for ``--b-train-steps`` uniform one-hot steps (or a checkpoint)."""
    import lightning as L

    from unas_lightning import FashionMNISTDataModule, SearchModule
    from unas_lightning.search.w_step import RelaxedSample
    from unas_lightning.spaces import DartsSpace

    L.seed_everything(0, verbose=False)
    space = DartsSpace(in_channels=1, num_classes=10, channels=8, layers=3, stem_stride=2)
    w_step = RelaxedSample(0.4) if args.b_w_step == "relaxed" else "discrete"
    module = SearchModule(space, objective="gen", gen_lambda=0.5, w_step_arch=w_step)
    dm = FashionMNISTDataModule(batch_size=args.b_batch_size, split="search")
    dm.setup("fit")
    loader = dm.train_dataloader()
    if args.checkpoint is not None:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        space.load_state_dict({k[len("space.") :]: v for k, v in state.items() if k.startswith("space.")})
        origin = f"checkpoint {args.checkpoint}"
    else:
        opt = torch.optim.Adam(space.weight_parameters(), lr=3e-3)
        batches = iter(loader)
        for _ in range(args.b_train_steps):
            x, y = next(batches)[0]["train"]
            loss = torch.nn.functional.cross_entropy(space(x, module.w_step_arch(space.arch)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        kind = "one-hot" if args.b_w_step == "discrete" else "relaxed (zeta, tau 0.4)"
        origin = f"w trained {args.b_train_steps} steps on uniformly sampled {kind} architectures, phi uniform"
    batch = next(iter(loader))[0]
    return module, batch, origin


def part_b(args) -> None:
    module, batch, origin = partly_trained_supernet(args)
    space = module.space
    phi = {k: v.detach().clone().requires_grad_(True) for k, v in space.arch.items()}
    loss_fn = module.step_loss(batch)
    estimators = [
        ("Reinforce, EMA baseline", Reinforce()),
        ("RLOO k=3", Reinforce(num_samples=3)),
        ("Rebar (paper: tau=0.4, eta=1), coupled zeta~", Rebar(conditional="coupled")),
        ("Rebar (paper), independent zeta~", Rebar(conditional="independent")),
        (
            "Rebar self-tuning eta, beta (closed form), coupled",
            Rebar(self_tuning=True, tune_temperature=False, tune_lr=0.05, conditional="coupled"),
        ),
        ("Rebar self-tuning eta, beta, tau, coupled", Rebar(self_tuning=True, tune_lr=0.05, conditional="coupled")),
        (
            "Rebar self-tuning eta, beta (closed form), independent zeta~",
            Rebar(self_tuning=True, tune_temperature=False, tune_lr=0.05, conditional="independent"),
        ),
        ("StraightThroughGumbel (biased)", StraightThroughGumbel()),
        ("ReinMax (biased)", ReinMax()),
        ("GumbelSoftmax (biased)", GumbelSoftmax()),
    ]
    # SearchModule(cv_examples=m): the relaxed control variate on the first m examples of each batch
    losses = {}
    for m in args.b_cv_examples:
        module.cv_examples = m
        sub_batch = module.step_loss(batch)  # its relaxed() is the objective on m examples
        for name, est in [
            (f"Rebar (paper), coupled, relaxed terms on {m} of 32 examples", Rebar(conditional="coupled")),
            (
                f"Rebar self-tuning eta, beta, coupled, relaxed terms on {m} of 32",
                Rebar(self_tuning=True, tune_temperature=False, tune_lr=0.05, conditional="coupled"),
            ),
            (
                f"Rebar self-tuning eta, beta, independent, relaxed terms on {m} of 32",
                Rebar(self_tuning=True, tune_temperature=False, tune_lr=0.05, conditional="independent"),
            ),
        ]:
            estimators.insert(-1, (name, est))
            losses[name] = sub_batch
    if args.b_skip:
        estimators = [(n, e) for n, e in estimators if not any(word in n for word in args.b_skip)]
    estimators_by_name = dict(estimators)
    results = {}
    for name, est in estimators:
        torch.manual_seed(0)
        est.prepare(phi)
        sample_gradients(est, phi, losses.get(name, loss_fn), n=args.b_warmup)
        start = time.perf_counter()
        samples = sample_gradients(est, phi, losses.get(name, loss_fn), n=args.b_draws).double()
        seconds = (time.perf_counter() - start) / args.b_draws
        results[name] = (samples.var(0), evaluations(est, phi), seconds, est.hparams())
        print(f"  done: {name}", file=sys.stderr, flush=True)
    ref_var, ref_evals, _, _ = results["Reinforce, EMA baseline"]
    rows = []
    for name, (var, e, seconds, hp) in results.items():
        ratio = var / ref_var.clamp_min(1e-300)
        total = (var.sum() / ref_var.sum()).item()
        rows.append(
            {
                "estimator": name,
                "evals": e,
                "median var ratio": f"{ratio.median().item():.3f}",
                "total var ratio": f"{total:.3f}",
                "total ratio at equal evals": f"{total * e / ref_evals:.3f}",
                "s / estimate": f"{seconds:.3f}",
                "state after adaptation": ", ".join(f"{k}={v}" for k, v in hp.items() if k in ("temperature", "eta")),
                "beta": f"{float(est.beta.detach()):.3f}" if isinstance(est := estimators_by_name[name], Rebar) else "",
            }
        )
    print("## (b) DARTS supernet on Fashion-MNIST: variance relative to Reinforce\n")
    print(
        f"Quickstart supernet (C=8, 3 cells, stride-2 stem), {origin}; L_gen (lambda 0.5) on one fixed pair of "
        f"search-train/search-val batches of 32; {args.b_warmup} adaptation draws, then {args.b_draws} estimates.\n"
    )
    columns = ["estimator", "evals", "median var ratio", "total var ratio", "total ratio at equal evals"]
    print(table(rows, [*columns, "s / estimate", "state after adaptation", "beta"]))
    print("\nRatios < 1 mean less variance than Reinforce with its moving-average baseline; 'at equal evals'")
    print("multiplies by evals / 1, the variance of the average of estimates at the same evaluation budget.\n")


# -- (c) the RELAX-paper optimization toy ----------------------------------------------------------------
def optimize_toy(
    make: Callable[[], Estimator] | None, steps: int, seed: int, target: float = 0.499, var_draws: int = 200
):
    torch.manual_seed(seed)
    theta = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.01)
    est = make() if make is not None else None

    def loss_fn(a):
        return (a["b"][..., 1] - target) ** 2

    def logits_of(t):
        return {"b": torch.stack([torch.zeros(()), t])}

    log_vars, every = [], max(1, steps // 10)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        if est is None:
            p = torch.sigmoid(theta)
            (p * (1 - target) ** 2 + (1 - p) * target**2).backward()
        else:
            est.surrogate(logits_of(theta), loss_fn).loss.backward()
        opt.step()
        if est is not None and (step + 1) % every == 0:
            frozen = copy.deepcopy(est)
            grads = []
            for _ in range(var_draws):
                t = theta.detach().clone().requires_grad_(True)
                (g,) = torch.autograd.grad(frozen.surrogate(logits_of(t), loss_fn).loss, t)
                grads.append(g)
            log_vars.append(math.log(torch.stack(grads).double().var().item() + 1e-300))
    p = torch.sigmoid(theta.detach()).double()
    final = float(p * (1 - target) ** 2 + (1 - p) * target**2)
    return final, statistics.mean(log_vars) if log_vars else None


def part_c(args) -> None:
    print("## (c) Optimizing E[(b - 0.499)^2]: final expected loss and log-variance\n")
    print(f"theta_0 = 0 (p = 0.5), Adam lr 0.01, {args.steps} steps, one sample per step, seeds 0..{args.seeds - 1}.\n")
    runs = [
        ("exact gradient", None),
        ("Reinforce, no baseline (Eq. 1)", lambda: Reinforce(use_baseline=False)),
        ("Reinforce, EMA baseline", Reinforce),
        ("Rebar (paper: tau=0.4, eta=1)", Rebar),
        ("Rebar self-tuning eta, beta, tau", lambda: Rebar(self_tuning=True)),
        ("Relax (linear g, regression)", Relax),
        ("Relax (linear g, self-tuning + variance fit)", lambda: Relax(fit="both", self_tuning=True)),
    ]
    rows = []
    for name, make in runs:
        start = time.perf_counter()
        results = [optimize_toy(make, args.steps, seed, var_draws=args.var_draws) for seed in range(args.seeds)]
        finals = [r[0] for r in results]
        lv = [r[1] for r in results if r[1] is not None]
        rows.append(
            {
                "estimator": name,
                "final E[f] (mean)": f"{statistics.mean(finals):.6f}",
                "worst seed": f"{max(finals):.6f}",
                "mean log var": f"{statistics.mean(lv):.2f}" if lv else "0 (exact)",
                "seconds/run": f"{(time.perf_counter() - start) / args.seeds:.1f}",
            }
        )
        print(f"  done: {name}", file=sys.stderr, flush=True)
    print(table(rows, ["estimator", "final E[f] (mean)", "worst seed", "mean log var", "seconds/run"]))
    print("\nThe minimum is 0.249001 (p(b=1) = 0); literature targets: RELAX final <= 0.24915, log var <= -10.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "c", "all"], default="all")
    parser.add_argument("--warmup", type=int, default=500, help="(a) adaptation draws per estimator")
    parser.add_argument("--draws", type=int, default=4000, help="(a) estimates per estimator")
    parser.add_argument("--steps", type=int, default=10_000, help="(c) optimization steps")
    parser.add_argument("--seeds", type=int, default=3, help="(c) seeds")
    parser.add_argument("--var-draws", type=int, default=200, help="(c) draws per log-variance checkpoint")
    parser.add_argument("--checkpoint", type=Path, default=None, help="(b) a quickstart search's last.ckpt")
    parser.add_argument("--b-train-steps", type=int, default=300, help="(b) w-steps before measuring")
    parser.add_argument("--b-batch-size", type=int, default=32, help="(b) the batch of the w-steps and estimates")
    parser.add_argument("--b-cv-examples", type=int, nargs="*", default=[8, 4], help="(b) cv_examples rows")
    parser.add_argument("--b-skip", nargs="*", default=[], help="(b) skip estimators whose name contains these")
    parser.add_argument("--b-warmup", type=int, default=100, help="(b) adaptation draws per estimator")
    parser.add_argument("--b-draws", type=int, default=32, help="(b) estimates per estimator")
    parser.add_argument(
        "--b-w-step", choices=["discrete", "relaxed"], default="discrete", help="(b) what w was trained on"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every part at toy sizes (a: 200 estimates, b: 20 w-steps, batch 8, 8 estimates, no self-tuning or "
        "sub-batch rows, c: 100 steps, one seed): checks the script, not the figures",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.draws, args.steps, args.seeds, args.var_draws = 30, 200, 100, 1, 20
        args.b_train_steps, args.b_warmup, args.b_draws, args.b_cv_examples = 20, 4, 8, []
        args.b_batch_size = 8
        args.b_skip = [*args.b_skip, "self-tuning", "independent"]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"`python benchmarks/estimator_variance.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
    print(f"(torch {torch.__version__}, {torch.get_num_threads()} CPU threads)\n")
    if args.part in ("a", "all"):
        part_a(args)
    if args.part in ("b", "all"):
        part_b(args)
    if args.part in ("c", "all"):
        part_c(args)


if __name__ == "__main__":
    main()
