"""SearchModule: the UNAS search loop (paper Sec. 3.2) as a LightningModule."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from unas_lightning.callbacks.cost_monitor import CostMonitor
from unas_lightning.callbacks.genotype_writer import GenotypeWriter
from unas_lightning.costs import CostTerm
from unas_lightning.distributions import expand_rows
from unas_lightning.estimators import Estimator, Rebar
from unas_lightning.search import objectives
from unas_lightning.search.step_objective import StepObjective
from unas_lightning.search.w_step import WStepArch, resolve_w_step_arch
from unas_lightning.spaces.base import ArchitecturePenalty, SearchSpace
from unas_lightning.spaces.genotype import Genotype
from unas_lightning.utils import seeding
from unas_lightning.utils.nonfinite import NonFiniteGuard

# Lightning warns (with a code example, on every search) that ModelCheckpoint(every_n_train_steps) under manual
# optimization saves the state after the optimizer step: that is the state a SearchModule resumes from, with the
# loops' positions, bit-exactly (tests/search/test_resume.py), so the warning has nothing for its users.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps")

#: a search step's data: ``{"train": (x, y), "val": (x, y)}``
Batch = Mapping[str, tuple[Tensor, Tensor]]

#: constructor arguments that are objects, not hyperparameters to log
OBJECTS = ["space", "estimator", "costs", "w_step_arch", "w_optimizer", "phi_optimizer", "w_scheduler", "phi_scheduler"]


class SearchModule(L.LightningModule):
    """UNAS architecture search: alternating manual steps on phi (Eq. 6/8) and w (Eq. 7).

    Each training step takes one search-train and one search-val batch (``{"train": .., "val": ..}``):

    1. phi-step: the estimator computes d/dphi E_{p_phi(z)}[L(z)] with L the configured objective
       (``"gen"``: L_gen of Eq. 8, ``"train"`` or ``"val"``: Eq. 6) evaluated on both batches with the
       *same* architecture, w held constant (``StepObjective``); every cost term adds its own estimate
       of lambda * E[penalty(m(z))]; then the phi optimizer steps.
    2. w-step: the training loss at the architecture ``w_step_arch`` chooses (Eq. 7): a one-hot z,
       which runs only the chosen operations, its relaxation zeta as in the official UNAS code, or the
       softmax(phi) mixture of DARTS; gradient clipping, then the w optimizer steps.

    The first ``warmup_epochs`` epochs run the w-step only. ``GenotypeWriter`` writes the most probable
    genotype (``genotype.json``) and ``CostMonitor`` calibrates and reports the costs; both are added
    to the trainer unless configured there already.

    With ``arch_samples="example"`` every example of the mini-batch gets its own architecture sample
    (the official UNAS code's default on CIFAR): the estimator sees phi expanded to [B, ...] and the
    per-example losses [B], pairs each loss with its own log-probability and averages the B
    estimates; the w-step mixes the supernet per example too. ``"batch"`` shares one sample per
    step (the official code's ImageNet setting, and the cheaper one: only the chosen operations run).

    Under DDP each rank draws its own architecture sample on its own data shard and DDP averages the
    per-rank estimates, which is again an unbiased estimate (with ``world_size`` samples); phi stays
    identical on every rank because its gradient is all-reduced before every step. Every step's draws
    come from a seed of (run seed, epoch, batch, rank) (``seeding.py``): resume is bit-exact.

    Args:
        space: the search space (supernet and logits phi), e.g. ``DartsSpace``.
        estimator: gradient estimator for phi (default ``Rebar()``).
        objective: ``"gen"`` (L_gen, Eq. 8), ``"train"`` or ``"val"`` (Eq. 6).
        gen_lambda: lambda of L_gen (paper: 0.5).
        gen_gap: with one architecture per step, L_gen's gap between the batch means (``"batch"``, Eq. 8
            as printed) or per example pair (``"example"``, the official code); per-example
            architectures always take it per example.
        warmup_epochs: epochs that train w only.
        arch_samples: ``"batch"`` (one architecture per step) or ``"example"`` (one per example).
        w_step_arch: the w-step's architecture (``w_step.py``): ``"discrete"`` (one-hot z ~ p_phi),
            ``"relaxed"`` (Gumbel-softmax zeta at temperature 1; ``RelaxedSample(temperature)`` for
            another), ``"softmax"`` (the DARTS mixture), or any ``WStepArch``.
        warmup_w_step_arch: the w-step's architecture during the warm-up (None: ``w_step_arch``); choices
            that ignore phi train the supernet for ranking before the search starts: ``"fair"`` (FairNAS's
            strict fairness: every operation of every edge once per update) or ``"path_dropout"``; in the
            NAS-Bench-201 space ``"deisomorphic"`` trains every distinct cell equally often
            (``search.deisomorphic``).
        w_optimizer: optimizer factory for w (default Adam, lr 3e-4, as the paper's code).
        phi_optimizer: optimizer factory for phi (default Adam, lr 1e-3, as the paper's code).
        w_scheduler: LR scheduler factory for w (default cosine annealing over ``max_epochs``).
        phi_scheduler: LR scheduler factory for phi (default none).
        w_grad_clip: max gradient norm of the w-step (None disables clipping).
        costs: hardware cost terms (``costs.CostTerm``: measured latency, parameters, multiply-adds or
            a meter of one's own), each adding lambda * E[penalty(m(z))] to the phi-step.
        max_nonfinite_steps: phi- and w-steps with a NaN/inf loss are skipped with a warning; more than
            this many in a row stop the search with an error (w and phi keep their last good values).
        cv_examples: a control variate that evaluates the loss at relaxed architectures (``Rebar``)
            evaluates it on the first m examples of each batch only, while L(z) uses all of them: still
            unbiased, a fraction of the cost (the relaxed evaluations run every candidate operation),
            some variance added (``EstimatorDiagnostics`` shows how much). Pair it with
            ``Rebar(self_tuning=True, tune_temperature=False)``: a sub-batch control variate needs a scale
            eta below 1. The quickstart uses 4 (README, "Search step cost"). None: all examples (the paper).
        alpha_loss: weight of the space's architecture penalty in the objective (``ArchitecturePenalty``;
            DARTS: a node's two edges choosing the same input and op). The paper: 0; the official code: 0.2.
        soften_eps: sample from the softened distribution (q + eps) / (1 + K eps), q = softmax(phi), in
            the phi-step, the w-step and the costs (the official code's ``gsm_soften_eps``: 0.08 for
            ImageNet and ProxylessNAS); the genotype is still the argmax of phi. The paper: 0.
        restart_after_warmup: the official code's schedule: constant learning rates during the warm-up,
            fresh optimizer states at the first search epoch, and the schedulers stepped over the search
            epochs only (the default cosine then spans ``max_epochs - warmup_epochs``). Default: one
            optimizer and schedule across all epochs.

    Examples:
        >>> from unas_lightning.spaces import DartsSpace
        >>> from unas_lightning.estimators import Reinforce
        >>> module = SearchModule(DartsSpace(channels=4, layers=3), estimator=Reinforce(), objective="val")
        >>> module.estimator
        Reinforce(baseline_decay=0.9, use_baseline=True, num_samples=1)
    """

    run_seed: Tensor  # buffers (checkpointed): the run seed, restart_after_warmup done, phi-steps so far
    restarted: Tensor
    phi_steps: Tensor

    def __init__(
        self,
        space: SearchSpace,
        estimator: Estimator | None = None,
        objective: Literal["train", "val", "gen"] = "gen",
        gen_lambda: float = 0.5,
        gen_gap: Literal["batch", "example"] = "batch",
        warmup_epochs: int = 0,
        arch_samples: Literal["batch", "example"] = "batch",
        w_step_arch: WStepArch | Literal["discrete", "relaxed", "softmax"] = "discrete",
        warmup_w_step_arch: WStepArch
        | Literal["discrete", "relaxed", "softmax", "fair", "path_dropout", "deisomorphic"]
        | None = None,
        w_optimizer: OptimizerCallable | None = None,
        phi_optimizer: OptimizerCallable | None = None,
        w_scheduler: LRSchedulerCallable | None = None,
        phi_scheduler: LRSchedulerCallable | None = None,
        w_grad_clip: float | None = 5.0,
        costs: Sequence[CostTerm] | None = None,
        max_nonfinite_steps: int = 10,
        cv_examples: int | None = None,
        alpha_loss: float = 0.0,
        soften_eps: float = 0.0,
        restart_after_warmup: bool = False,
    ):
        super().__init__()
        _check_settings(space, estimator, objective, gen_lambda, warmup_epochs, arch_samples, w_grad_clip, cv_examples)
        self.automatic_optimization = False
        self.space = space
        self.estimator = estimator if estimator is not None else Rebar()
        self.costs = nn.ModuleList(_check_costs(costs))
        self.estimator.prepare(dict(space.arch))
        for cost in self._cost_terms():
            cost.prepare(dict(space.arch))
        self.objective, self.gen_lambda, self.cv_examples = objective, float(gen_lambda), cv_examples
        self.gen_gap = objectives.check_gap(gen_gap)
        self.warmup_epochs, self.arch_samples = warmup_epochs, arch_samples
        self.w_step_arch = resolve_w_step_arch(w_step_arch)
        self.warmup_w_step_arch = (
            self.w_step_arch if warmup_w_step_arch is None else resolve_w_step_arch(warmup_w_step_arch)
        )
        self.w_optimizer, self.phi_optimizer = w_optimizer, phi_optimizer
        self.w_scheduler, self.phi_scheduler = w_scheduler, phi_scheduler
        self.w_grad_clip = w_grad_clip
        self.nonfinite = NonFiniteGuard(max_nonfinite_steps)
        if not alpha_loss >= 0 or not 0 <= soften_eps < 1:
            raise ValueError(f"alpha_loss must be >= 0 and soften_eps in [0, 1), got {alpha_loss} and {soften_eps}.")
        if alpha_loss and not isinstance(space, ArchitecturePenalty):
            raise ValueError(f"alpha_loss needs a space with an architecture penalty; {type(space).__name__} has none.")
        self.alpha_loss, self.soften_eps = float(alpha_loss), float(soften_eps)
        self.restart_after_warmup = bool(restart_after_warmup)
        self.save_hyperparameters(ignore=OBJECTS)
        # the run seed behind every step's draws; -1 until setup, then from the checkpoint when resuming
        self.register_buffer("run_seed", torch.tensor(-1, dtype=torch.int64))
        self.register_buffer("restarted", torch.zeros((), dtype=torch.bool))  # restart_after_warmup done
        self.register_buffer("phi_steps", torch.zeros((), dtype=torch.int64))  # phi updates so far
        self.train_acc = MulticlassAccuracy(num_classes=space.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=space.num_classes, average="micro")
        self._weights = list(space.weight_parameters())  # w, listed once (walking the modules is slow)

    # -- setup ---------------------------------------------------------------------------------
    @override
    def setup(self, stage: str) -> None:
        if int(self.run_seed) < 0:
            self.run_seed.fill_(seeding.run_seed(self.trainer.strategy))
        dm = getattr(self.trainer, "datamodule", None)
        for attr in ("num_classes", "in_channels"):
            want, have = getattr(dm, attr, None), getattr(self.space, attr)
            if want is not None and want != have:
                raise ValueError(
                    f"the data has {attr}={want} but the search space was built with {attr}={have}; "
                    f"set --model.init_args.space.init_args.{attr} {want}."
                )
        if len(self.costs):
            shape = getattr(dm, "example_shape", None)
            if shape is None:
                raise ValueError("hardware costs need the data module's example_shape (channels, height, width).")
            for cost in self._cost_terms():
                cost.setup(self.space, shape, self.trainer.strategy)

    def genotype(self) -> Genotype | None:
        """The search's result so far: the space's most probable architecture (``GenotypeWriter`` writes it);
        None while no phi-step has run (during the warm-up, or a run with ``max_epochs <= warmup_epochs``):
        an untouched phi is not a result."""
        return self.space.genotype() if int(self.phi_steps) > 0 else None

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before ``phi_steps`` existed: phi-steps ran if an epoch after the warm-up did."""
        state = checkpoint.get("state_dict", {})
        if "phi_steps" not in state:
            state["phi_steps"] = torch.tensor(int(checkpoint.get("epoch", 0) >= self.warmup_epochs))

    @override
    def configure_callbacks(self) -> list[L.Callback]:
        """``GenotypeWriter`` (and ``CostMonitor`` with costs), unless the trainer has them already."""
        have = {type(cb) for cb in self.trainer.callbacks}  # type: ignore[attr-defined]  # set by Lightning
        wanted = [GenotypeWriter] + ([CostMonitor] if len(self.costs) else [])
        return [cls() for cls in wanted if not any(issubclass(h, cls) for h in have)]

    @override
    def on_fit_start(self) -> None:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and 0 <= max_epochs <= self.warmup_epochs:
            rank_zero_warn(
                f"max_epochs={max_epochs} <= warmup_epochs={self.warmup_epochs}: no phi-step will run, so this run "
                "trains the supernet weights only and writes no genotype. Raise --trainer.max_epochs or lower "
                "--model.init_args.warmup_epochs to search."
            )
        model = self.trainer.strategy.model
        if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
            raise ValueError(
                "the search runs only the sampled operations, so DDP must allow unused parameters: use "
                "--trainer.strategy ddp_find_unused_parameters_true (unas-cli maps 'ddp' to it for you)."
            )

    @override
    def configure_optimizers(self) -> tuple[list[Optimizer], list[LRScheduler | ReduceLROnPlateau]]:
        phi = list(self.space.arch_parameters())
        opt_w = self.w_optimizer(self._weights) if self.w_optimizer else torch.optim.Adam(self._weights, lr=3e-4)
        opt_phi = self.phi_optimizer(phi) if self.phi_optimizer else torch.optim.Adam(phi, lr=1e-3)
        schedulers: list[LRScheduler | ReduceLROnPlateau]
        if self.w_scheduler is not None:
            schedulers = [self.w_scheduler(opt_w)]
        else:
            epochs = (self.trainer.max_epochs or 1) if self._trainer is not None else 1
            t_max = max(1, epochs - (self.warmup_epochs if self.restart_after_warmup else 0))
            schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt_w, T_max=t_max)]
        if self.phi_scheduler is not None:
            schedulers.append(self.phi_scheduler(opt_phi))
        return [opt_w, opt_phi], schedulers

    # -- the objective of a step -----------------------------------------------------------------
    @property
    def searching(self) -> bool:
        """True once the warm-up epochs are over and phi is updated."""
        return self.current_epoch >= self.warmup_epochs

    def examples_per_step(self, batch: Batch) -> int:
        """Examples the phi-step uses from each batch (train and val are cut to the same size)."""
        use_train, use_val = objectives.uses_batches(self.objective)
        return min(batch[k][0].shape[0] for k, used in (("train", use_train), ("val", use_val)) if used)

    def step_loss(self, batch: Batch) -> StepObjective:
        """The search objective L(arch) on this step's batches, w held constant (an ``ArchLoss``)."""
        n = self.examples_per_step(batch)
        return StepObjective(
            self.space,
            batch,
            self.objective,
            self.gen_lambda,
            n,
            self._weights,
            relaxed_examples=self.cv_examples,
            gen_gap=self.gen_gap,
            penalty=self.alpha_loss,
        )

    def sampling_logits(self) -> dict[str, Tensor]:
        """The logits architectures are drawn from: phi, or log(softmax(phi) + eps) with ``soften_eps``."""
        if not self.soften_eps:
            return dict(self.space.arch)
        return {k: torch.log(torch.softmax(v, -1) + self.soften_eps) for k, v in self.space.arch.items()}

    def phi_logits(self, batch: Batch) -> dict[str, Tensor]:
        """The sampling logits as the estimator sees them: shared, or one row set per example."""
        logits = self.sampling_logits()
        return logits if self.arch_samples == "batch" else expand_rows(logits, self.examples_per_step(batch))

    # -- the two steps -------------------------------------------------------------------------
    def phi_step(self, batch: Batch) -> dict[str, Tensor]:
        """One phi update (Eq. 6/8 plus the costs); returns what to log."""
        loss_fn = self.step_loss(batch)
        loss = self.estimator.surrogate(self.phi_logits(batch), loss_fn).loss
        logs = {f"search/{k}": v for k, v in loss_fn.logs().items()}
        for cost in self._cost_terms():
            cost_loss, cost_logs = cost.phi_loss(self.sampling_logits(), self.current_epoch - self.warmup_epochs)
            loss = loss + cost_loss
            logs.update(cost_logs)
        if self._finite(loss, "phi"):
            opt_phi = self._optimizers()[1]
            opt_phi.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_phi.step()
            self.phi_steps += 1
        return logs

    def w_step(self, batch: Batch) -> Tensor:
        """One w update on the search-train batch at the w-step's architecture (Eq. 7)."""
        x, y = batch["train"]
        choose = self.w_step_arch if self.searching else self.warmup_w_step_arch
        archs = choose.paths(self.sampling_logits(), x.shape[0] if self.arch_samples == "example" else None)
        opt_w = self._optimizers()[0]
        opt_w.zero_grad(set_to_none=True)
        total = torch.zeros((), device=x.device)
        for arch in archs:  # one path usually; several (e.g. "fair") sum their gradients into one update
            logits = self.space(x, arch)
            loss = F.cross_entropy(logits, y) / len(archs)
            if not self._finite(loss, "w"):
                opt_w.zero_grad(set_to_none=True)
                return loss.detach()
            self.manual_backward(loss)
            total = total + loss.detach()
        if self.w_grad_clip is not None:
            # Lightning documents clip_gradients with the LightningOptimizer that optimizers() returns,
            # though its annotation names the wrapped torch Optimizer
            self.clip_gradients(opt_w, gradient_clip_val=self.w_grad_clip, gradient_clip_algorithm="norm")  # type: ignore[arg-type]
        opt_w.step()
        self.train_acc(logits.detach(), y)
        return total

    @override
    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if not isinstance(batch, Mapping) or not {"train", "val"} <= set(batch):
            raise ValueError(
                "SearchModule needs {'train': batch, 'val': batch} each step: use a data module with split='search'."
            )
        batch_size = batch["train"][0].shape[0]
        logs: dict[str, Tensor] = {}
        seed = seeding.step_seed(int(self.run_seed), self.current_epoch, batch_idx, self.global_rank)
        with seeding.seeded(seed, self.device):
            if self.searching:
                logs.update(self.phi_step(batch))
            logs["search/w_loss"] = self.w_step(batch)
        self.log_dict(logs, prog_bar=True, batch_size=batch_size)
        self.log("search/train_acc", self.train_acc, prog_bar=True, batch_size=batch_size)
        with torch.no_grad():
            self.log("arch/entropy", self.space.distribution().entropy(), batch_size=batch_size)

    def _finite(self, loss: Tensor, which: str) -> bool:
        where = f"at epoch {self.current_epoch}, step {self.global_step}"
        return self.nonfinite.finite(loss, which, self.trainer.strategy, where)

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accuracy of the current most probable architecture on search-val data."""
        x, y = batch
        logits = self.space(x, self.space.mode())
        self.val_acc(logits, y)
        self.log("val/loss_mode", F.cross_entropy(logits, y), batch_size=x.shape[0], sync_dist=True)
        self.log("val/acc_mode", self.val_acc, prog_bar=True, batch_size=x.shape[0])

    @override
    def on_train_epoch_start(self) -> None:
        if self.restart_after_warmup and self.searching and not bool(self.restarted):
            for opt in self._optimizers():  # fresh Adam moments for the search (once; the flag is checkpointed)
                opt.optimizer.state.clear()
            self.restarted.fill_(True)

    @override
    def on_train_epoch_end(self) -> None:
        if self.restart_after_warmup and not self.searching:
            return  # constant learning rates during the warm-up
        schedulers = self.lr_schedulers()
        for sch in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler: LRScheduler = sch  # stepped without a metric (a ReduceLROnPlateau would need one)
            scheduler.step()

    # -- checkpoints -------------------------------------------------------------------------------
    def describe(self) -> str:
        """One line naming the search (written into checkpoints, quoted when one does not fit)."""
        return self.space.describe()

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["unas"] = {"model": self.describe()}

    def _cost_terms(self) -> Sequence[CostTerm]:
        """``costs`` as what it holds (an ``nn.ModuleList`` of ``CostTerm``, checked in ``__init__``)."""
        return cast("Sequence[CostTerm]", self.costs)

    def _optimizers(self) -> list[LightningOptimizer]:
        """The two optimizers ``configure_optimizers`` returns, (w, phi)."""
        return cast("list[LightningOptimizer]", self.optimizers())


def _check_settings(
    space: SearchSpace,
    estimator: Estimator | None,
    objective: str,
    gen_lambda: float,
    warmup_epochs: int,
    arch_samples: str,
    w_grad_clip: float | None,
    cv_examples: int | None,
) -> None:
    """Stop early, naming the setting to change."""
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be an unas_lightning.spaces.SearchSpace, got {type(space).__name__}.")
    if estimator is not None and not isinstance(estimator, Estimator):
        raise TypeError(f"estimator must be an unas_lightning.estimators.Estimator, got {type(estimator).__name__}.")
    objectives.check_objective(objective, gen_lambda)
    if arch_samples not in ("batch", "example"):
        raise ValueError(f"arch_samples must be 'batch' or 'example', got {arch_samples!r}.")
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}.")
    if w_grad_clip is not None and not w_grad_clip > 0:
        raise ValueError(f"w_grad_clip must be > 0 or null, got {w_grad_clip}.")
    if cv_examples is not None and (
        isinstance(cv_examples, bool) or not isinstance(cv_examples, int) or cv_examples < 1
    ):
        raise ValueError(f"cv_examples must be a positive integer or null, got {cv_examples!r}.")
    if cv_examples is not None and arch_samples == "example":
        raise ValueError("cv_examples needs arch_samples='batch' (per-example rows pair with every example).")


def _check_costs(costs: Sequence[CostTerm] | None) -> list[CostTerm]:
    costs = list(costs or [])
    for cost in costs:
        if not isinstance(cost, CostTerm):
            raise TypeError(f"costs holds unas_lightning.costs.CostTerm objects, got {type(cost).__name__}.")
    names = [c.name for c in costs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two costs are named {twice[0]!r}: give one of them another name (CostTerm(name=...)).")
    return costs
