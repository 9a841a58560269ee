"""Measured latency of a network on the device the search runs on (paper Sec. 3.2 and 5), and its meter.

Timing rules: eval mode, no autograd, a fixed batch size and input size, warm-up runs before timing,
the median of repeated runs. On CUDA each run is timed with CUDA events around the forward and the
device is synchronised; on CPU with ``time.perf_counter`` under a fixed number of intra-op threads.

Backends: ``"eager"`` (plain PyTorch) and ``"compile"`` (``torch.compile``: operator fusion and
generated kernels make latency non-additive across layers, the case the paper motivates).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import Tensor, nn

from unas_lightning.costs.base import Candidate, Meter

Backend = Literal["eager", "compile"]
BACKENDS = ("eager", "compile")


@dataclass(frozen=True)
class Latency:
    """One measurement: the median over ``repeats`` timed runs, in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int
    batch_size: int
    device: str
    backend: str

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms


@contextlib.contextmanager
def cpu_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily fix torch's intra-op thread count (restored afterwards)."""
    if num_threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_settings(batch_size: int, warmup: int, repeats: int, backend: str) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"latency batch_size must be a positive integer, got {batch_size!r}.")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"latency needs warmup >= 0 and repeats >= 1, got {warmup} and {repeats}.")
    if backend not in BACKENDS:
        raise ValueError(f"unknown latency backend {backend!r}; choose one of {list(BACKENDS)}.")


def prepare(model: nn.Module, backend: Backend) -> nn.Module:
    """The module to time: ``model`` itself, or its ``torch.compile`` version."""
    if backend == "compile":
        # Every network compiles from scratch: without the reset, dynamo's per-code cache (8 entries by
        # default) fills after a few architectures and later ones silently run eagerly.
        torch._dynamo.reset()
        return cast(nn.Module, torch.compile(model, dynamic=False))  # an OptimizedModule
    return model


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 32,
    device: torch.device | str | None = None,
    warmup: int = 5,
    repeats: int = 20,
    backend: Backend = "eager",
    num_threads: int | None = None,
) -> Latency:
    """Median forward latency of ``model`` on a random batch [batch_size, *input_shape].

    Args:
        model: the network (put in eval mode for the measurement and restored afterwards).
        input_shape: one example's shape, e.g. (3, 224, 224).
        batch_size: images per forward (the paper: 32 on a V100).
        device: where to run (default: the model's device).
        warmup: untimed runs first (cuDNN autotuning, compilation, caches).
        repeats: timed runs; the median is reported.
        backend: ``"eager"`` or ``"compile"``.
        num_threads: CPU intra-op threads during the measurement (None: leave as is).

    Examples:
        >>> import torch
        >>> lat = measure_latency(torch.nn.Conv2d(3, 8, 3), (3, 16, 16), batch_size=2, warmup=1, repeats=3)
        >>> lat.median_ms > 0 and lat.device == "cpu"
        True
    """
    check_settings(batch_size, warmup, repeats, backend)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        fn = prepare(model, backend)
        gen = torch.Generator(device=device).manual_seed(0)  # the input's values do not matter; the run's RNG stays put
        x = torch.randn(batch_size, *input_shape, device=device, generator=gen)
        with cpu_threads(num_threads if device.type == "cpu" else None):
            for _ in range(warmup):
                fn(x)
            times = _time_cuda(fn, x, repeats) if device.type == "cuda" else _time_host(fn, x, repeats, device)
    finally:
        model.train(was_training)
    q1, med, q3 = _quartiles(times)
    return Latency(med, q1, q3, repeats, batch_size, str(device), backend)


def _time_cuda(fn: Callable[[Tensor], object], x: Tensor, repeats: int) -> list[float]:
    torch.cuda.synchronize(x.device)
    out = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        torch.cuda.synchronize(x.device)
        out.append(start.elapsed_time(end))
    return out


def _time_host(fn: Callable[[Tensor], object], x: Tensor, repeats: int, device: torch.device) -> list[float]:
    sync = getattr(torch, device.type).synchronize if device.type not in ("cpu", "meta") else (lambda: None)
    out = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn(x)
        sync()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


class MeasuredLatency(Meter):
    """The measured forward latency (ms) of a candidate's network on the search's device.

    Eval mode, no autograd, a fixed batch of ``batch_size`` examples of the data's shape, ``warmup``
    untimed runs, the median of ``repeats`` timed runs (CUDA events on a GPU, ``perf_counter`` on a CPU;
    see :func:`measure_latency`). Under DDP the cost term has rank 0 time every architecture, so all
    ranks agree on each value.

    Args:
        batch_size: images per timed forward (the paper: 32 on a V100).
        warmup: untimed runs before each measurement.
        repeats: timed runs; the median is used.
        backend: ``"eager"`` or ``"compile"`` (``torch.compile``: fused kernels make latency
            non-additive across layers, the case the paper motivates).
        num_threads: CPU threads during measurements (None: torch's current setting).

    Examples:
        >>> from unas_lightning.spaces import DartsSpace
        >>> space = DartsSpace(channels=4, layers=3)
        >>> candidate = Candidate(space.genotype(), space, (1, 28, 28))
        >>> MeasuredLatency(batch_size=2, warmup=1, repeats=3).measure(candidate) > 0
        True
    """

    name, unit = "latency", "ms"

    def __init__(
        self,
        batch_size: int = 32,
        warmup: int = 3,
        repeats: int = 10,
        backend: Backend = "eager",
        num_threads: int | None = None,
    ):
        check_settings(batch_size, warmup, repeats, backend)
        self.batch_size, self.warmup, self.repeats = batch_size, warmup, repeats
        self.backend, self.num_threads = backend, num_threads

    def measure(self, candidate: Candidate) -> float:
        network = candidate.network.to(candidate.device)
        lat = measure_latency(
            network,
            candidate.example_shape,
            batch_size=self.batch_size,
            device=candidate.device,
            warmup=self.warmup,
            repeats=self.repeats,
            backend=self.backend,
            num_threads=self.num_threads,
        )
        return lat.median_ms
