"""Measured latency of a network on the device the search runs on (paper Sec. 3.2 and 5), and its meter.

Timing rules, as the field measures (ProxylessNAS, nn-Meter, the paper's V100 numbers): eval mode, no
autograd, a fixed batch size and input size, warm-up runs before timing (cuDNN autotuning, compilation,
caches), the median of repeated runs. On CUDA each run is timed with CUDA events around the forward,
the device is synchronised after each, and ``cudnn.benchmark`` is on (each shape's fastest kernel); on
CPU with ``time.perf_counter`` under a fixed number of intra-op threads.

Backends: ``"eager"`` (plain PyTorch), ``"compile"`` (``torch.compile``: operator fusion and generated
kernels make latency non-additive across layers, the case the paper motivates) and ``"cudagraph"``
(CUDA only: the forward captured once as a CUDA graph and replayed, which removes the per-kernel
launch cost that dominates small networks on a GPU). Precision: ``"fp32"`` or ``"bf16"`` (autocast);
``channels_last`` memory format as an option.
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

Backend = Literal["eager", "compile", "cudagraph"]
BACKENDS = ("eager", "compile", "cudagraph")
Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")


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
    precision: str = "fp32"
    channels_last: bool = False

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


def check_settings(batch_size: int, warmup: int, repeats: int, backend: str, precision: str = "fp32") -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"latency batch_size must be a positive integer, got {batch_size!r}.")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"latency needs warmup >= 0 and repeats >= 1, got {warmup} and {repeats}.")
    if backend not in BACKENDS:
        raise ValueError(f"unknown latency backend {backend!r}; choose one of {list(BACKENDS)}.")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown latency precision {precision!r}; choose one of {list(PRECISIONS)}.")


def prepare(model: nn.Module, backend: Backend) -> nn.Module:
    """The module to time: ``model`` itself, or its ``torch.compile`` version (``"cudagraph"``: see
    :func:`graphed`, which needs the input)."""
    if backend == "compile":
        # Every network compiles from scratch: without the reset, dynamo's per-code cache (8 entries by
        # default) fills after a few architectures and later ones silently run eagerly.
        torch._dynamo.reset()
        return cast(nn.Module, torch.compile(model, dynamic=False))  # an OptimizedModule
    return model


def graphed(fn: Callable[[Tensor], object], x: Tensor, warmup: int) -> Callable[[Tensor], object]:
    """``fn`` on the static input ``x`` captured as one CUDA graph; the returned callable replays it.

    Warm-up runs first on a side stream (as ``torch.cuda.graph`` requires: lazy initialisation and cuDNN
    autotuning must not happen during capture).
    """
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 3)):
            fn(x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(x)

    def replay(_: Tensor) -> None:
        graph.replay()

    return replay


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` on while timing on CUDA (restored afterwards)."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on ``device`` for ``"bf16"``, nothing for ``"fp32"``."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    precision: Precision = "fp32",
    channels_last: bool = False,
) -> Latency:
    """Median forward latency of ``model`` on a random batch [batch_size, *input_shape].

    Args:
        model: the network (put in eval mode for the measurement and restored afterwards).
        input_shape: one example's shape, e.g. (3, 224, 224).
        batch_size: images per forward (the paper: 32 on a V100).
        device: where to run (default: the model's device).
        warmup: untimed runs first (cuDNN autotuning, compilation, caches).
        repeats: timed runs; the median is reported.
        backend: ``"eager"``, ``"compile"`` or ``"cudagraph"`` (CUDA only).
        num_threads: CPU intra-op threads during the measurement (None: leave as is).
        precision: ``"fp32"``, or ``"bf16"`` under autocast.
        channels_last: run the model and its input in the channels-last memory format (4-D inputs); the
            model is put back to contiguous format afterwards.

    Examples:
        >>> import torch
        >>> lat = measure_latency(torch.nn.Conv2d(3, 8, 3), (3, 16, 16), batch_size=2, warmup=1, repeats=3)
        >>> lat.median_ms > 0 and lat.device == "cpu"
        True
    """
    check_settings(batch_size, warmup, repeats, backend, precision)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if backend == "cudagraph" and device.type != "cuda":
        raise ValueError(f"the 'cudagraph' latency backend needs a CUDA device, not {device}; use eager or compile.")
    channels_last = channels_last and len(input_shape) == 3
    was_training = model.training
    model.eval()
    try:
        if channels_last:
            model.to(memory_format=torch.channels_last)
        gen = torch.Generator(device=device).manual_seed(0)  # the input's values do not matter; the run's RNG stays put
        x = torch.randn(batch_size, *input_shape, device=device, generator=gen)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        module = prepare(model, backend)

        def forward(inp: Tensor) -> object:
            with autocast(device, precision):
                return module(inp)

        fn: Callable[[Tensor], object] = forward
        with cpu_threads(num_threads if device.type == "cpu" else None), cudnn_benchmark(device):
            if backend == "cudagraph":
                fn = graphed(forward, x, warmup)
            for _ in range(warmup):
                fn(x)
            times = _time_cuda(fn, x, repeats) if device.type == "cuda" else _time_host(fn, x, repeats, device)
    finally:
        model.train(was_training)
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
    q1, med, q3 = _quartiles(times)
    return Latency(med, q1, q3, repeats, batch_size, str(device), backend, precision, channels_last)


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
        backend: ``"eager"``, ``"compile"`` (``torch.compile``: fused kernels make latency
            non-additive across layers, the case the paper motivates) or ``"cudagraph"`` (CUDA only).
        num_threads: CPU threads during measurements (None: torch's current setting).
        precision: ``"fp32"`` or ``"bf16"`` (autocast).
        channels_last: time in the channels-last memory format.

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
        precision: Precision = "fp32",
        channels_last: bool = False,
    ):
        check_settings(batch_size, warmup, repeats, backend, precision)
        self.batch_size, self.warmup, self.repeats = batch_size, warmup, repeats
        self.backend, self.num_threads = backend, num_threads
        self.precision, self.channels_last = precision, channels_last

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
            precision=self.precision,
            channels_last=self.channels_last,
        )
        return lat.median_ms
