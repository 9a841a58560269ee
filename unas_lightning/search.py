"""SearchModule: the UNAS search loop (paper Sec. 3.2) as a LightningModule."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from unas_lightning import objectives
from unas_lightning.distributions import Arch, ArchDistribution, check_temperature, detach
from unas_lightning.estimators import Estimator, Rebar
from unas_lightning.estimators.base import EstimatorOutput
from unas_lightning.estimators.control_variate import ControlVariateEstimator
from unas_lightning.latency.callback import LatencyCallback
from unas_lightning.latency.term import LatencyTerm
from unas_lightning.spaces.base import SearchSpace
from unas_lightning.step_objective import StepObjective

GENOTYPE_FILE = "genotype.json"
HISTORY_FILE = "genotypes.jsonl"


class SearchModule(L.LightningModule):
    """UNAS architecture search: alternating manual steps on phi (Eq. 6/8) and w (Eq. 7).

    Each training step takes one search-train and one search-val batch (``{"train": .., "val": ..}``):

    1. phi-step: the estimator computes d/dphi E_{p_phi(z)}[L(z)] with L the configured objective
       (``"gen"``: L_gen of Eq. 8, ``"train"`` or ``"val"``: Eq. 6) evaluated on both batches with the
       *same* architecture; the supernet weights are held constant in this step (only phi gets
       gradients), then the phi optimizer steps.
    2. w-step: the training loss of a fresh architecture sample (Eq. 7), either the one-hot z, which
       runs only the chosen operations, its relaxation zeta as in the official UNAS code, or the
       softmax(phi) mixture of DARTS; gradient clipping, then the w optimizer steps.

    The first ``warmup_epochs`` epochs run the w-step only. The most probable genotype is written to
    ``genotype.json`` in the run directory after every epoch and at the end of fit.

    With ``arch_samples="example"`` every example of the mini-batch gets its own architecture sample
    (the official UNAS code's default on CIFAR): the estimator sees phi expanded to [B, ...] and the
    per-example losses [B], pairs each loss with its own log-probability and averages the B
    estimates; the w-step mixes the supernet per example too. ``"batch"`` shares one sample per
    step (the official code's ImageNet setting, and the cheaper one: only the chosen operations run).

    Under DDP each rank draws its own architecture sample on its own data shard and DDP averages the
    per-rank estimates, which is again an unbiased estimate (with ``world_size`` samples); phi stays
    identical on every rank because its gradient is all-reduced before every step.

    Args:
        space: the search space (supernet and logits phi), e.g. ``DartsSpace``.
        estimator: gradient estimator for phi (default ``Rebar()``).
        objective: ``"gen"`` (L_gen, Eq. 8), ``"train"`` or ``"val"`` (Eq. 6).
        gen_lambda: lambda of L_gen (paper: 0.5).
        warmup_epochs: epochs that train w only.
        arch_samples: ``"batch"`` (one architecture per step) or ``"example"`` (one per example).
        w_step_arch: the w-step's architecture: ``"discrete"`` (one-hot z ~ p_phi), ``"relaxed"``
            (Gumbel-softmax zeta, as the official UNAS code and SNAS) or ``"softmax"`` (the
            deterministic mixture softmax(phi) of DARTS).
        w_step_temperature: temperature of zeta when ``w_step_arch="relaxed"``.
        w_optimizer: optimizer factory for w (default Adam, lr 3e-4, as the paper's code).
        phi_optimizer: optimizer factory for phi (default Adam, lr 1e-3, as the paper's code).
        w_scheduler: LR scheduler factory for w (default cosine annealing over ``max_epochs``).
        phi_scheduler: LR scheduler factory for phi (default none).
        cv_examples: evaluate the relaxed control variate of ``Rebar`` (L at zeta and zeta~) on the first
            m examples of each batch only, while L(z) uses all of them: still unbiased, a fraction of the
            cost (the relaxed evaluations run every candidate operation), some variance added
            (``EstimatorDiagnostics`` shows how much). Pair it with ``Rebar(self_tuning=True,
            tune_temperature=False)``: a sub-batch control variate needs a scale eta below 1. The
            quickstart uses 4 (README, "Search step cost"). None: all examples (the paper).
        w_grad_clip: max gradient norm of the w-step (None disables clipping).
        max_nonfinite_steps: phi-steps with a NaN/inf loss are skipped with a warning; more than this
            many in a row stop the search with an error (phi keeps its last good value).
        latency: a ``LatencyTerm`` adding lambda_lat * L_lat(z) (measured latency, through RELAX) to
            the phi-step; needs a ``LatencyCallback`` among the trainer's callbacks.

    Examples:
        >>> from unas_lightning.spaces import DartsSpace
        >>> from unas_lightning.estimators import Reinforce
        >>> module = SearchModule(DartsSpace(channels=4, layers=3), estimator=Reinforce(), objective="val")
        >>> module.estimator
        Reinforce(baseline_decay=0.9, use_baseline=True, num_samples=1)
    """

    def __init__(
        self,
        space: SearchSpace,
        estimator: Estimator | None = None,
        objective: Literal["train", "val", "gen"] = "gen",
        gen_lambda: float = 0.5,
        warmup_epochs: int = 0,
        arch_samples: Literal["batch", "example"] = "batch",
        w_step_arch: Literal["discrete", "relaxed", "softmax"] = "discrete",
        w_step_temperature: float = 1.0,
        w_optimizer: OptimizerCallable | None = None,
        phi_optimizer: OptimizerCallable | None = None,
        w_scheduler: LRSchedulerCallable | None = None,
        phi_scheduler: LRSchedulerCallable | None = None,
        w_grad_clip: float | None = 5.0,
        latency: LatencyTerm | None = None,
        max_nonfinite_steps: int = 10,
        cv_examples: int | None = None,
    ):
        super().__init__()
        objectives.check_objective(objective, gen_lambda)
        if w_step_arch not in ("discrete", "relaxed", "softmax"):
            raise ValueError(f"w_step_arch must be 'discrete', 'relaxed' or 'softmax', got {w_step_arch!r}.")
        if arch_samples not in ("batch", "example"):
            raise ValueError(f"arch_samples must be 'batch' or 'example', got {arch_samples!r}.")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        if w_grad_clip is not None and not w_grad_clip > 0:
            raise ValueError(f"w_grad_clip must be > 0 or null, got {w_grad_clip}.")
        self.automatic_optimization = False
        self.space = space
        self.estimator = estimator if estimator is not None else Rebar()
        if not isinstance(self.estimator, Estimator):
            raise TypeError(
                f"estimator must be an unas_lightning.estimators.Estimator, got {type(estimator).__name__}."
            )
        self.estimator.prepare(dict(space.arch))
        if latency is not None and not isinstance(latency, LatencyTerm):
            raise TypeError(f"latency must be a unas_lightning.latency.LatencyTerm, got {type(latency).__name__}.")
        self.latency = latency
        if cv_examples is not None and (not isinstance(cv_examples, int) or cv_examples < 1):
            raise ValueError(f"cv_examples must be a positive integer or null, got {cv_examples!r}.")
        if cv_examples is not None and arch_samples == "example":
            raise ValueError("cv_examples needs arch_samples='batch' (per-example rows pair with every example).")
        self.cv_examples = cv_examples
        if max_nonfinite_steps < 0:
            raise ValueError(f"max_nonfinite_steps must be >= 0, got {max_nonfinite_steps}.")
        self.max_nonfinite_steps = max_nonfinite_steps
        self._nonfinite_streak = {"phi": 0, "w": 0}  # consecutive skipped steps of each kind
        if latency is not None:
            latency.prepare(dict(space.arch))
        self.objective = objective
        self.gen_lambda = float(gen_lambda)
        self.warmup_epochs = warmup_epochs
        self.arch_samples = arch_samples
        self.w_step_arch = w_step_arch
        self.w_step_temperature = check_temperature(w_step_temperature)
        self.w_optimizer = w_optimizer
        self.phi_optimizer = phi_optimizer
        self.w_scheduler = w_scheduler
        self.phi_scheduler = phi_scheduler
        self.w_grad_clip = w_grad_clip
        self.save_hyperparameters(
            ignore=["space", "estimator", "latency", "w_optimizer", "phi_optimizer", "w_scheduler", "phi_scheduler"]
        )
        # the run seed behind step_seed(); -1 until setup, then from the checkpoint when resuming
        self.register_buffer("run_seed", torch.tensor(-1, dtype=torch.int64))
        self.train_acc = MulticlassAccuracy(num_classes=space.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=space.num_classes, average="micro")

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if int(self.run_seed) < 0:  # seed_everything's seed, else a random one shared by all ranks
            seed = os.environ.get("PL_GLOBAL_SEED")
            seed = int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()))
            self.run_seed.fill_(strategy.broadcast(seed, src=0))
        if isinstance(strategy, DDPStrategy) and not getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters"):
            raise ValueError(
                "the search runs only the sampled operations, so DDP must allow unused parameters: use "
                "--trainer.strategy ddp_find_unused_parameters_true (unas-cli maps 'ddp' to it for you)."
            )
        if self.latency is not None and not any(isinstance(cb, LatencyCallback) for cb in self.trainer.callbacks):
            raise ValueError(
                "the latency term measures real latency through a LatencyCallback: add "
                "--trainer.callbacks+=unas_lightning.latency.LatencyCallback."
            )
        dm = getattr(self.trainer, "datamodule", None)
        for attr in ("num_classes", "in_channels"):
            want, have = getattr(dm, attr, None), getattr(self.space, attr, None)
            if want is not None and have is not None and want != have:
                raise ValueError(
                    f"the data has {attr}={want} but the search space was built with {attr}={have}; "
                    f"set --model.init_args.space.init_args.{attr} {want}."
                )

    def configure_optimizers(self):
        w_params = list(self.space.weight_parameters())
        phi = list(self.space.arch_parameters())
        opt_w = self.w_optimizer(w_params) if self.w_optimizer else torch.optim.Adam(w_params, lr=3e-4)
        opt_phi = self.phi_optimizer(phi) if self.phi_optimizer else torch.optim.Adam(phi, lr=1e-3)
        schedulers = []
        if self.w_scheduler is not None:
            schedulers.append(self.w_scheduler(opt_w))
        else:
            t_max = max(1, self.trainer.max_epochs or 1) if self._trainer is not None else 1
            schedulers.append(torch.optim.lr_scheduler.CosineAnnealingLR(opt_w, T_max=t_max))
        if self.phi_scheduler is not None:
            schedulers.append(self.phi_scheduler(opt_phi))
        return [opt_w, opt_phi], schedulers

    # -- the two steps -------------------------------------------------------------------------
    @property
    def searching(self) -> bool:
        """True once the warm-up epochs are over and phi is updated."""
        return self.current_epoch >= self.warmup_epochs

    def _weights(self) -> list[Tensor]:
        """w, the supernet weights (listed once: walking thousands of modules every step is slow)."""
        if getattr(self, "_weight_list", None) is None:
            self._weight_list = list(self.space.weight_parameters())
        return self._weight_list

    def objective_fn(
        self, batch: Mapping[str, tuple[Tensor, Tensor]], record: dict, examples: int | None = None
    ) -> StepObjective:
        """The search objective L(arch) on this step's batches (their first ``examples``), w held constant.

        With per-example architectures (rows [B, ...]) it returns the per-example losses [B];
        example b of the train batch and example b of the val batch share architecture b. Each call
        stores its parts (L_train, L_val, objective; batch means) in ``record[id(arch)]``. Its
        ``many(archs)`` evaluates several architectures in one supernet pass (``StepObjective``).
        """
        n = self.examples_per_step(batch)
        if examples is not None:
            n = min(n, examples)
        return StepObjective(self.space, batch, self.objective, self.gen_lambda, n, record, weights=self._weights())

    def examples_per_step(self, batch) -> int:
        """Examples the phi-step uses from each batch (train and val are cut to the same size)."""
        use_train, use_val = objectives.uses_batches(self.objective)
        sizes = [batch[k][0].shape[0] for k, used in (("train", use_train), ("val", use_val)) if used]
        return min(sizes)

    def phi_logits(self, batch) -> dict[str, Tensor]:
        """phi as the estimator sees it: shared, or expanded to one row set per example."""
        if self.arch_samples == "batch":
            return dict(self.space.arch)
        n = self.examples_per_step(batch)
        return {k: v.expand(n, *v.shape) for k, v in self.space.arch.items()}

    def estimate(self, estimator: Estimator, logits, batch, record: dict) -> EstimatorOutput:
        """``estimator.surrogate`` on this step's objective; with ``cv_examples`` a control-variate
        estimator evaluates its relaxed terms on the first ``cv_examples`` examples only."""
        loss_fn = self.objective_fn(batch, record)
        if self.cv_examples is not None and isinstance(estimator, ControlVariateEstimator):
            return estimator.surrogate(logits, loss_fn, self.objective_fn(batch, {}, examples=self.cv_examples))
        return estimator.surrogate(logits, loss_fn)

    def phi_step(self, batch) -> dict[str, Tensor]:
        """One phi update; returns what to log (the objective's parts, the latency term's)."""
        opt_phi = self.optimizers()[1]
        record: dict[int, dict[str, Tensor]] = {}
        out = self.estimate(self.estimator, self.phi_logits(batch), batch, record)
        parts = record.get(id(out.arch)) or next(reversed(record.values()))
        logs = {f"search/{k}": v for k, v in parts.items()}
        loss = out.loss
        if self.latency is not None:
            lat: dict[str, float] = {}
            lat_out = self.latency.estimator.surrogate(dict(self.space.arch), self.latency.loss_fn(lat))
            lam = self.latency.weight_at(self.current_epoch - self.warmup_epochs)
            loss = loss + lam * lat_out.loss
            logs.update(
                {
                    "latency/measured_ms": torch.tensor(lat["measured_ms"]),
                    "latency/predicted_ms": torch.tensor(lat["predicted_ms"]),
                    "latency/abs_error_ms": torch.tensor(abs(lat["measured_ms"] - lat["predicted_ms"])),
                    "latency/penalty": lat_out.value.detach(),
                    "latency/lambda": torch.tensor(lam),
                }
            )
        if not self._all_finite(loss, "phi"):
            return logs
        opt_phi.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_phi.step()
        return logs

    def step_seed(self, batch_idx: int) -> int:
        """The seed of all random draws of one training step: a function of (run seed, epoch, batch, rank).

        Every step's architecture samples depend on nothing else, so a run resumed from a mid-epoch
        checkpoint draws exactly what the uninterrupted run drew (data loaders, latency timing and
        callbacks may use the global RNG freely in between). Ranks draw independent samples.
        """
        key = [int(self.run_seed), self.current_epoch, batch_idx, self.global_rank]
        return int(np.random.SeedSequence(key).generate_state(1)[0])

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _all_finite(self, loss: Tensor, which: str) -> bool:
        """False (and the step is skipped on every rank) when the loss is NaN/inf on any rank.

        A run of more than ``max_nonfinite_steps`` such steps raises ``FloatingPointError``: w and phi
        still hold their last good values, and so does every checkpoint written meanwhile.
        """
        finite = torch.isfinite(loss.detach()).all().float()
        if self.trainer.world_size > 1:  # all ranks must agree, or DDP's gradient all-reduce would hang
            finite = self.trainer.strategy.reduce(finite, reduce_op="min")
        if bool(finite > 0):
            self._nonfinite_streak[which] = 0
            return True
        self._nonfinite_streak[which] += 1
        if self._nonfinite_streak[which] > self.max_nonfinite_steps:
            raise FloatingPointError(
                f"{self._nonfinite_streak[which]} {which}-steps in a row had a non-finite loss (NaN/inf); the "
                "search stops here with w and phi at their last good values (the last checkpoint is kept). "
                "Lower the learning rates or check the data."
            )
        warnings.warn(
            f"non-finite {which}-step loss at epoch {self.current_epoch}, step {self.global_step}; step skipped.",
            stacklevel=2,
        )
        return False

    def sample_w_step_arch(self, batch_size: int = 1) -> Arch:
        """An architecture for Eq. 7: one-hot z ~ p_phi, its relaxation zeta, or softmax(phi) (detached).

        With per-example architectures the rows carry a leading dimension ``batch_size``.
        """
        with torch.no_grad():
            logits = dict(self.space.arch)
            if self.w_step_arch == "softmax":
                return {k: torch.softmax(v.detach(), -1) for k, v in logits.items()}
            if self.arch_samples == "example":
                logits = {k: v.expand(batch_size, *v.shape) for k, v in logits.items()}
            s = ArchDistribution(logits).rsample(self.w_step_temperature)
        return s.z if self.w_step_arch == "discrete" else detach(s.zeta)

    def w_step(self, batch) -> Tensor:
        opt_w = self.optimizers()[0]
        x, y = batch["train"]
        logits = self.space(x, self.sample_w_step_arch(x.shape[0]))
        loss = F.cross_entropy(logits, y)
        if not self._all_finite(loss, "w"):
            return loss.detach()
        opt_w.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.w_grad_clip is not None:
            self.clip_gradients(opt_w, gradient_clip_val=self.w_grad_clip, gradient_clip_algorithm="norm")
        opt_w.step()
        self.train_acc(logits.detach(), y)
        return loss.detach()

    def training_step(self, batch, batch_idx):
        if not isinstance(batch, Mapping) or not {"train", "val"} <= set(batch):
            raise ValueError(
                "SearchModule needs {'train': batch, 'val': batch} each step: use a data module with split='search'."
            )
        batch_size = batch["train"][0].shape[0]
        logs = {}
        with torch.random.fork_rng(devices=self._rng_devices(), device_type=self.device.type):
            torch.manual_seed(self.step_seed(batch_idx))
            if self.searching:
                logs.update(self.phi_step(batch))
            logs["search/w_loss"] = self.w_step(batch)
        self.log_dict(logs, prog_bar=True, batch_size=batch_size)
        self.log("search/train_acc", self.train_acc, prog_bar=True, batch_size=batch_size)
        with torch.no_grad():
            self.log("arch/entropy", self.space.distribution().entropy(), batch_size=batch_size)

    def validation_step(self, batch, batch_idx):
        """Accuracy of the current most probable architecture on search-val data."""
        x, y = batch
        logits = self.space(x, self.space.distribution().mode())
        self.val_acc(logits, y)
        self.log("val/loss_mode", F.cross_entropy(logits, y), batch_size=x.shape[0], sync_dist=True)
        self.log("val/acc_mode", self.val_acc, prog_bar=True, batch_size=x.shape[0])

    # -- epoch ends and outputs ----------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        for sch in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            sch.step()
        self.export_genotype(history=True)

    def on_fit_end(self) -> None:
        self.export_genotype(history=False)

    def describe(self) -> str:
        """One line naming the search (written into checkpoints, quoted when one does not fit)."""
        shapes = {tuple(v.shape) for v in self.space.arch.values()}
        n_w = sum(p.numel() for p in self.space.weight_parameters())
        return (
            f"a {type(self.space).__name__} search ({len(self.space.arch)} categoricals of shapes "
            f"{sorted(shapes)}, {n_w:,} supernet weights)"
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["unas"] = {"model": self.describe()}

    @property
    def run_dir(self) -> Path:
        """Where genotypes go: the logger's directory, else the trainer's root directory.

        ``Trainer.log_dir`` broadcasts from rank 0, so every rank must read this property.
        """
        trainer = self.trainer
        return Path(trainer.log_dir if trainer.log_dir is not None else trainer.default_root_dir)

    def export_genotype(self, history: bool = False) -> Path | None:
        """Write the most probable genotype to ``genotype.json`` (rank 0 only) and log it.

        With ``history`` it is also appended to ``genotypes.jsonl`` and logged to TensorBoard.
        """
        genotype = self.space.genotype()
        run_dir = self.run_dir  # a collective call under DDP: every rank must reach it
        if not self.trainer.is_global_zero:
            return None
        path = genotype.save(run_dir / GENOTYPE_FILE)
        if not history:
            return path
        entry = {"epoch": self.current_epoch, "step": self.global_step, "genotype": genotype.to_dict()}
        with open(run_dir / HISTORY_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_text("genotype", f"```\n{genotype.to_json()}\n```", self.global_step)
        return path
