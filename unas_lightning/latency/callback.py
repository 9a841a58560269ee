"""LatencyCallback: real latency of sampled architectures, measured on the search's own device."""

from __future__ import annotations

import json
import statistics
import time
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from unas_lightning.distributions import Arch, ArchDistribution
from unas_lightning.latency.measure import BACKENDS, measure_latency
from unas_lightning.latency.surrogate import fit_linear_surrogate
from unas_lightning.spaces.darts_genotype import write_text_atomic

REPORT_FILE = "latency_report.json"


class OneHotNetwork(nn.Module):
    """A search space run with one fixed one-hot architecture (for spaces without a derived network)."""

    def __init__(self, space: nn.Module, arch: Arch):
        super().__init__()
        self.space, self.arch = space, arch

    def forward(self, x):
        return self.space(x, self.arch)


class LatencyCallback(L.Callback):
    """Measure the latency of architectures during search and fit the linear surrogate (Sec. 3.1, 5).

    Requires a ``SearchModule`` with a ``latency`` term. Before the first phi-step it samples
    ``num_archs`` architectures uniformly, times each (derived network, eval mode, no grad, fixed batch
    size and input size, ``warmup`` untimed runs, median of ``repeats``), fits the linear surrogate by
    ridge regression and logs its held-out error (``latency/surrogate_mae_ms``,
    ``latency/surrogate_mape``). During search it measures the architecture sampled for the latency
    term at every phi-step (the module logs ``latency/measured_ms``, ``latency/predicted_ms``,
    ``latency/abs_error_ms``), and after every epoch the latency of the most probable architecture
    (``latency/mode_ms``). Identical architectures are timed once (a cache keyed by the genotype).
    At the end of fit it writes ``latency_report.json`` (surrogate error, the derived architecture's
    measured and predicted latency, the target) next to ``genotype.json``.

    Under DDP rank 0 does all timing and broadcasts it: the surrogate data, and at every phi-step the
    samples of all ranks (gathered, each distinct architecture timed once), so every rank holds the same
    surrogate and the same cache and no two ranks see different latencies for one architecture (on
    rank 0's device; the other ranks wait). The cache and the surrogate data are saved in checkpoints.

    Args:
        num_archs: architectures timed before search to fit the surrogate (paper: 10,000).
        holdout: fraction of them kept out of the fit to report its error.
        batch_size: images per timed forward (paper: 32 on a V100).
        warmup: untimed runs before each measurement.
        repeats: timed runs; the median is used.
        backend: ``"eager"`` or ``"compile"`` (``torch.compile``).
        num_threads: CPU threads during measurements (None: torch's current setting).
        alpha: ridge penalty of the surrogate fit.
        refit_every_n_steps: refit the surrogate on everything measured so far every n phi-steps
            (0: never).
        seed: seed of the surrogate architectures (independent of the run seed).
    """

    def __init__(
        self,
        num_archs: int = 200,
        holdout: float = 0.2,
        batch_size: int = 32,
        warmup: int = 3,
        repeats: int = 10,
        backend: Literal["eager", "compile"] = "eager",
        num_threads: int | None = None,
        alpha: float = 1e-3,
        refit_every_n_steps: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if num_archs < 5:
            raise ValueError(f"num_archs must be >= 5 to fit and check the surrogate, got {num_archs}.")
        if backend not in BACKENDS:
            raise ValueError(f"unknown latency backend {backend!r}; choose one of {list(BACKENDS)}.")
        if batch_size < 1 or warmup < 0 or repeats < 1:
            raise ValueError("latency batch_size and repeats must be >= 1 and warmup >= 0.")
        if not 0 < holdout < 1:
            raise ValueError(f"holdout must lie in (0, 1), got {holdout}.")
        self.num_archs, self.holdout, self.batch_size = num_archs, holdout, batch_size
        self.warmup, self.repeats, self.backend, self.num_threads = warmup, repeats, backend, num_threads
        self.alpha, self.refit_every_n_steps, self.seed = alpha, refit_every_n_steps, seed
        self.cache: dict[str, float] = {}
        self.measured: list[tuple[dict[str, list[int]], float]] = []  # (arch as indices, ms)
        self.fit_metrics: dict[str, float] = {}
        self.collection_seconds = 0.0
        self._module = self._trainer = None
        self._input_shape: tuple[int, ...] | None = None
        self._phi_steps = 0

    # -- measurement ---------------------------------------------------------------------------------
    def network_for(self, arch: Arch) -> nn.Module:
        space = self._module.space
        if hasattr(space, "derived_network"):
            return space.derived_network(space.genotype(arch), copy_weights=False)
        return OneHotNetwork(space, arch)

    def key(self, arch: Arch) -> str:
        return json.dumps({k: v.detach().argmax(-1).tolist() for k, v in arch.items()}, sort_keys=True)

    def _time(self, arch: Arch) -> float:
        """Median latency (ms) of one architecture on this process's device (no cache, no collectives)."""
        lat = measure_latency(
            self.network_for(arch),
            self._input_shape,
            batch_size=self.batch_size,
            device=self._module.device,
            warmup=self.warmup,
            repeats=self.repeats,
            backend=self.backend,
            num_threads=self.num_threads,
        )
        return lat.median_ms

    def _remember(self, key: str, ms: float) -> None:
        self.cache[key] = ms
        self.measured.append((json.loads(key), ms))

    def measure(self, arch: Arch) -> float:
        """Median latency (ms) of the one-hot ``arch``; cached per architecture.

        Under DDP this is a collective: every rank calls it the same number of times (each with its own
        sample), rank 0 times the architectures no rank has cached, and broadcasts the results, so all
        ranks hold one cache and never disagree on the latency of an architecture.
        """
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            key = self.key(arch)
            if key not in self.cache:
                self._remember(key, self._time(arch))
            return self.cache[key]
        flat = torch.cat([arch[k].detach().argmax(-1).flatten() for k in sorted(arch)])
        rows = trainer.strategy.all_gather(flat).reshape(trainer.world_size, -1).cpu()
        archs = [self._unflatten(row, arch) for row in rows]
        keys = [self.key(a) for a in archs]
        new = list(dict.fromkeys(k for k in keys if k not in self.cache))
        timed = [self._time(archs[keys.index(k)]) for k in new] if trainer.is_global_zero else []
        timed = trainer.strategy.broadcast(timed, src=0)
        for key, ms in zip(new, timed, strict=True):
            self._remember(key, ms)
        return self.cache[keys[trainer.global_rank]]

    @staticmethod
    def _unflatten(indices: torch.Tensor, template: Arch) -> Arch:
        """The one-hot architecture with the flat per-choice ``indices`` (inverse of ``measure``'s flatten)."""
        by_key, start = {}, 0
        for k in sorted(template):
            shape = template[k].shape[:-1]
            by_key[k] = indices[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return LatencyCallback._one_hot(by_key, template)

    @staticmethod
    def _one_hot(indices: dict, template: Arch) -> Arch:
        """One-hot rows (dtype and device of ``template``) with the chosen ``indices`` per key."""
        return {
            k: torch.nn.functional.one_hot(torch.as_tensor(indices[k]), v.shape[-1]).to(v) for k, v in template.items()
        }

    # -- hooks ---------------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        term = getattr(pl_module, "latency", None)
        if term is None:
            raise ValueError("LatencyCallback needs a SearchModule with a latency term: set --model.init_args.latency.")
        self._module, self._trainer = pl_module, trainer
        dm = trainer.datamodule
        shape = getattr(dm, "example_shape", None)
        if shape is None:
            raise ValueError("LatencyCallback needs the data module's example_shape (channels, height, width).")
        self._input_shape = tuple(shape)
        term.measure = self.measure

    def on_train_start(self, trainer, pl_module) -> None:
        term = pl_module.latency
        if bool(term.ready):
            return
        start = time.perf_counter()
        archs, latencies = self.collect(trainer, pl_module)
        self.collection_seconds = time.perf_counter() - start
        self.fit(pl_module, archs, latencies)
        rank_zero_info(
            f"latency surrogate: {len(archs)} architectures timed in {self.collection_seconds:.1f} s; held-out "
            f"MAE {self.fit_metrics['test_mae_ms']:.3f} ms, MAPE {self.fit_metrics['test_mape']:.2f}%"
        )

    def collect(self, trainer, pl_module) -> tuple[list[Arch], list[float]]:
        """Time ``num_archs`` uniformly sampled architectures (rank 0) and share the result."""
        logits = {k: torch.zeros_like(v) for k, v in pl_module.space.arch.items()}
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        archs = [ArchDistribution(logits).sample(generator=gen) for _ in range(self.num_archs)]
        keys = [self.key(a) for a in archs]
        latencies = [0.0] * len(archs)
        if trainer.is_global_zero:
            show = trainer.progress_bar_callback is not None
            progress = _progress(len(archs), "timing architectures for the latency surrogate", show)
            for i, (arch, key) in enumerate(zip(archs, keys, strict=True)):
                latencies[i] = self.cache[key] if key in self.cache else self._time(arch)
                progress(i + 1)
        latencies = trainer.strategy.broadcast(latencies, src=0)
        for key, ms in zip(keys, latencies, strict=True):
            if key not in self.cache:
                self._remember(key, ms)
        return archs, latencies

    def fit(self, pl_module, archs: list[Arch], latencies: list[float]) -> None:
        result = fit_linear_surrogate(archs, latencies, holdout=self.holdout, alpha=self.alpha, seed=self.seed)
        pl_module.latency.set_latency_model(result.surrogate.to(pl_module.device), statistics.fmean(latencies))
        self.fit_metrics = {**result.as_dict(), "collection_seconds": self.collection_seconds}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not pl_module.searching:
            return
        self._phi_steps += 1
        if self.fit_metrics:
            pl_module.log("latency/surrogate_mae_ms", self.fit_metrics["test_mae_ms"], batch_size=1)
            pl_module.log("latency/surrogate_mape", self.fit_metrics["test_mape"], batch_size=1)
        if self.refit_every_n_steps and self._phi_steps % self.refit_every_n_steps == 0 and len(self.measured) >= 5:
            archs = [self._one_hot(idx, dict(pl_module.space.arch)) for idx, _ in self.measured]
            self.fit(pl_module, archs, [ms for _, ms in self.measured])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        mode = pl_module.space.distribution().mode()
        pl_module.log("latency/mode_ms", self.measure(mode), batch_size=1)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._input_shape is None:
            return
        mode = pl_module.space.distribution().mode()
        measured_ms = self.measure(mode)  # collective under DDP
        run_dir = pl_module.run_dir  # collective under DDP
        if not trainer.is_global_zero:
            return
        with torch.no_grad():
            predicted = float(pl_module.latency.latency_model(mode))
        report = {
            "genotype": pl_module.space.genotype().to_dict(),
            "measured_ms": measured_ms,
            "predicted_ms": predicted,
            "target_ms": pl_module.latency.target_ms,
            "form": pl_module.latency.form,
            "device": str(pl_module.device),
            "backend": self.backend,
            "batch_size": self.batch_size,
            "input_shape": list(self._input_shape),
            "surrogate": self.fit_metrics,
            "architectures_timed": len(self.cache),
        }
        write_text_atomic(run_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")

    # -- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "cache": dict(self.cache),
            "measured": list(self.measured),
            "fit_metrics": dict(self.fit_metrics),
            "phi_steps": self._phi_steps,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.cache = dict(state_dict.get("cache", {}))
        self.measured = [(dict(a), float(ms)) for a, ms in state_dict.get("measured", [])]
        self.fit_metrics = dict(state_dict.get("fit_metrics", {}))
        self._phi_steps = int(state_dict.get("phi_steps", 0))


def _progress(total: int, description: str, show: bool = True):
    """A tqdm progress bar (when shown and available), else a quiet counter."""
    if not show:
        return lambda n: None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return lambda n: None
    bar = tqdm(total=total, desc=description, leave=False)

    def update(n: int) -> None:
        bar.update(n - bar.n)
        if n >= total:
            bar.close()

    return update
