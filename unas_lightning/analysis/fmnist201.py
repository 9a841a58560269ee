"""FMNIST-201: a NAS-Bench-201 table trained on Fashion-MNIST, the ground truth of the default data set.

NAS-Bench-201's published tables judge a cell by its accuracy on CIFAR or ImageNet16-120, none of which
is on a machine without a download. FMNIST-201 trains cells of the same space stand-alone, from scratch,
on the real Fashion-MNIST with one fixed :class:`Protocol`, and records per cell and training seed the
validation accuracy (on 10,000 held-out training images), the test accuracy (the 10,000 test images),
the parameter count and the training time. Cells are kept one per isomorphism class
(``NB201Genotype.unique_key``: 6,466 classes of 15,625 cells); a cell whose output does not depend on
its input (``NB201Genotype.connected`` is False) scores chance, 10%, without training.

The package ships a sample of the classes (``fmnist201.json`` beside this file: its protocol, seeds,
hardware and build date are recorded in it), built by ``benchmarks/fmnist201.py``. :class:`FMNIST201Table`
reads it through the API of ``NB201Table`` (``accuracy``, ``accuracies``, ``draw_accuracies``,
``mean_accuracies``, ``best``), so ``TabularSearch(dataset="fmnist201")`` searches it and any code can
look a cell up. A cell outside the sample is trained on demand with the file's protocol and seeds and
kept in ``cache_dir`` (a run's folder; never the installed package).

Examples:
    Once the table is built (``python benchmarks/fmnist201.py build``; until then ``FMNIST201Table()``
    says how), any cell is looked up by its isomorphism class::

        table = FMNIST201Table()
        best, accuracy = table.best()
        table.accuracies(best), table.test_accuracy(best)

The shipped table is being built across sessions (``docs/howto/fmnist201.md`` states its status and
the protocol study); a table of another protocol is read with ``FMNIST201Table(path)``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unas_lightning.data.augment import augment_batch
from unas_lightning.spaces.nb201.genotype import NB201Genotype
from unas_lightning.spaces.nb201.network import NB201Network
from unas_lightning.utils.files import write_json_atomic

SHIPPED = Path(__file__).with_name("fmnist201.json")
CACHE_FILE = "fmnist201_on_demand.json"
CHANCE = 10.0  # % accuracy of a constant network on Fashion-MNIST's 10 balanced classes
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel statistics


@dataclass(frozen=True)
class Protocol:
    """How every cell of the table is trained: one fixed recipe, so accuracies are comparable.

    Args:
        channels: C, the first stage's width of ``NB201Network``.
        cells_per_stage: N, cells in each of its 3 stages.
        epochs: passes over the training images.
        train_examples: training images, the first of a fixed permutation of the 60,000 (the last 10,000
            of it are the validation images, never trained on).
        batch_size: SGD batch.
        lr: the initial learning rate, annealed to 0 by a cosine over all steps.
        momentum, nesterov, weight_decay: SGD's.
        crop_padding: random crops after zero padding (0: none).
        flip: random horizontal flips.
        image_size: images are resized (area interpolation) to this many pixels a side (28: as they are).
        eval_examples: validation and test images used (the first of each set; at most 10,000).
    """

    channels: int = 8
    cells_per_stage: int = 1
    epochs: int = 4
    train_examples: int = 20000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    crop_padding: int = 0
    flip: bool = False
    image_size: int = 16
    eval_examples: int = 10000

    def __post_init__(self):
        if not 1 <= self.eval_examples <= 10000:
            raise ValueError(f"eval_examples must lie in [1, 10000], got {self.eval_examples}.")
        if not 1 <= self.train_examples <= 50000:
            raise ValueError(f"train_examples must lie in [1, 50000], got {self.train_examples}.")
        if min(self.channels, self.cells_per_stage, self.epochs, self.batch_size, self.image_size) < 1:
            raise ValueError(f"every size of a protocol must be >= 1: {self}.")
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4 (two stride-2 reductions), got {self.image_size}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Protocol:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown protocol fields {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}.")
        return cls(**data)


@dataclass
class Split:
    """Fashion-MNIST as tensors, normalized: train (the protocol's), val (10,000 held out), test (10,000)."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]

    @classmethod
    def load(cls, protocol: Protocol, root: str | None = None) -> Split:
        from unas_lightning.data.datamodules import FashionMNISTDataModule

        data = FashionMNISTDataModule(root=root)
        (xtr, ytr), (xte, yte) = data.load_arrays(train=True), data.load_arrays(train=False)
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))
        train, val = perm[: protocol.train_examples], perm[-10000:][: protocol.eval_examples]

        def prep(x: np.ndarray, y: np.ndarray, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
            xs, ys = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y), dtype=torch.long)
            if index is not None:
                xs, ys = xs[index], ys[index]
            xs = (xs.float().div(255.0).unsqueeze(1) - MEAN) / STD
            if protocol.image_size != xs.shape[-1]:
                xs = F.interpolate(xs, size=protocol.image_size, mode="area")
            return xs.contiguous(), ys

        test = torch.arange(protocol.eval_examples)
        return cls(prep(xtr, ytr, train), prep(xtr, ytr, val), prep(xte, yte, test))


@dataclass
class CellResult:
    """One training run of one cell: accuracies in %, the parameter count and the training time."""

    val_acc: float
    test_acc: float
    params: int
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate(net: torch.nn.Module, data: tuple[Tensor, Tensor], batch_size: int = 250) -> float:
    """Top-1 accuracy (%) of ``net`` in eval mode (running batch-norm statistics) on ``data``."""
    net.eval()
    correct = 0
    x, y = data
    device = next(net.parameters()).device
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = net(x[i : i + batch_size].to(device))
            correct += int((logits.argmax(-1).cpu() == y[i : i + batch_size]).sum())
    return 100.0 * correct / len(x)


def train_cell(
    genotype: NB201Genotype, protocol: Protocol, seed: int, split: Split, device: str | torch.device = "cpu"
) -> CellResult:
    """Train ``genotype``'s ``NB201Network`` from scratch with ``protocol`` and training seed ``seed``.

    The seed fixes the initial weights, the batch order and the augmentation; a disconnected cell is
    not trained (chance accuracy, 0 s). The caller's random state and grad mode are left as they were
    (a search may train a cell on demand in the middle of its step).
    """
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
        return _train_cell(genotype, protocol, seed, split, device)


def _train_cell(genotype: NB201Genotype, protocol: Protocol, seed: int, split: Split, device) -> CellResult:
    torch.manual_seed(seed)  # the initial weights, the batch order and the augmentation
    net = NB201Network(genotype, 1, 10, protocol.channels, protocol.cells_per_stage)
    if not genotype.connected():
        return CellResult(CHANCE, CHANCE, sum(p.numel() for p in net.parameters()), 0.0)
    return fit(net, protocol, split, device)


def train_network(
    build: Callable[[], torch.nn.Module],
    protocol: Protocol,
    seed: int,
    split: Split,
    device: str | torch.device = "cpu",
) -> CellResult:
    """Train the network ``build()`` returns with ``protocol``'s optimizer, schedule and budget, seed ``seed``.

    The judge of any space on the FMNIST-201 protocol (``protocol.channels`` and ``cells_per_stage`` are
    the caller's business: ``build`` makes the network). The seed fixes the initial weights (``build``
    runs under it), the batch order and the augmentation; the caller's random state and grad mode are
    left as they were.

    Examples:
        >>> import torch
        >>> protocol = Protocol(epochs=1, train_examples=64, batch_size=32, eval_examples=32, image_size=8)
        >>> split = Split(*[(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))] * 3)
        >>> build = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> result = train_network(build, protocol, seed=0, split=split)
        >>> 0 <= result.val_acc <= 100 and result.params == 650
        True
    """
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(seed)
        return fit(build(), protocol, split, device)


def fit(net: torch.nn.Module, protocol: Protocol, split: Split, device: str | torch.device) -> CellResult:
    """Train ``net`` in place (SGD, cosine schedule, the protocol's epochs over its training images) and
    evaluate it; torch's random state drives the batch order and the augmentation."""
    params = sum(p.numel() for p in net.parameters())
    device = torch.device(device)
    net = net.to(device)
    opt = torch.optim.SGD(
        net.parameters(),
        lr=protocol.lr,
        momentum=protocol.momentum,
        nesterov=protocol.nesterov,
        weight_decay=protocol.weight_decay,
    )
    x, y = split.train
    steps_per_epoch = len(x) // protocol.batch_size
    total = max(1, steps_per_epoch * protocol.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    start = time.perf_counter()
    for _ in range(protocol.epochs):
        net.train()
        order = torch.randperm(len(x))
        for b in range(steps_per_epoch):
            idx = order[b * protocol.batch_size : (b + 1) * protocol.batch_size]
            xb = augment_batch(x[idx].to(device), protocol.crop_padding, protocol.flip)
            loss = F.cross_entropy(net(xb), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    return CellResult(evaluate(net, split.val), evaluate(net, split.test), params, seconds)


def hardware() -> str:
    """The machine a result was measured on, for the table's record."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} thread(s)"
    )


def empty_table(protocol: Protocol, seeds: Iterable[int]) -> dict[str, Any]:
    """A table file's contents before any cell is trained."""
    return {
        "name": "FMNIST-201",
        "about": "NAS-Bench-201 cells trained on Fashion-MNIST; one record per isomorphism class (unique_key)",
        "protocol": asdict(protocol),
        "seeds": list(seeds),
        "hardware": hardware(),
        "torch": torch.__version__,
        "built": time.strftime("%Y-%m-%d"),
        "cells": {},
    }


def add_result(table: dict[str, Any], genotype: NB201Genotype, seed: int, result: CellResult, source: str) -> None:
    """Put one training run into a table's contents (per cell: lists aligned with ``table["seeds"]``)."""
    seeds = table["seeds"]
    if seed not in seeds:
        raise ValueError(f"seed {seed} is not one of the table's seeds {seeds}.")
    record = table["cells"].setdefault(
        genotype.unique_key(),
        {
            "arch": genotype.to_arch_str(),
            "source": source,
            "params": result.params,
            **{k: [None] * len(seeds) for k in ("val_acc", "test_acc", "train_seconds")},
        },
    )
    i = seeds.index(seed)
    record["val_acc"][i], record["test_acc"][i] = round(result.val_acc, 3), round(result.test_acc, 3)
    record["train_seconds"][i] = round(result.train_seconds, 2)


def complete(record: dict[str, Any]) -> bool:
    return all(v is not None for v in record["val_acc"])


class FMNIST201Table:
    """The FMNIST-201 table: a NAS-Bench-201 cell's accuracy after training on Fashion-MNIST.

    Read like ``NB201Table``: per cell (any cell: it is looked up by its isomorphism class) the
    validation accuracy per training seed (``accuracies``) and its mean (``accuracy``: the cell's
    quality), the test accuracy, the parameter count; over the whole space, tensors in table-key order
    (``seed_accuracies``, ``mean_accuracies``; NaN for classes not trained yet). A cell not in the file
    is trained on demand (``train_missing``) with the file's protocol and every seed of the file, and
    kept in ``cache_dir/fmnist201_on_demand.json`` when a folder is given.

    Args:
        path: the table file (default: the one shipped with the package).
        cache_dir: where cells trained on demand are kept (and read back from), e.g. a run's folder.
        train_missing: train a cell outside the table when it is asked for (else a ``KeyError``).
        device: where on-demand training runs.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        train_missing: bool = True,
        device: str = "cpu",
    ):
        self.path = Path(path) if path is not None else SHIPPED
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no FMNIST-201 table at {self.path}: build one with `python benchmarks/fmnist201.py build`."
            )
        data = json.loads(self.path.read_text())
        self.meta = {k: v for k, v in data.items() if k != "cells"}
        self.protocol = Protocol.from_dict(data["protocol"])
        self.seeds: list[int] = list(data["seeds"])
        self.records: dict[str, dict[str, Any]] = {k: r for k, r in data["cells"].items() if complete(r)}
        self.shipped = set(self.records)
        self.train_missing, self.device = train_missing, device
        self.cache_dir: Path | None = None
        self._split: Split | None = None
        if cache_dir is not None:
            self.use_cache_dir(cache_dir)

    # -- on demand -----------------------------------------------------------------------------------
    def use_cache_dir(self, folder: str | Path) -> None:
        """Keep cells trained on demand in ``folder`` (and take those already there)."""
        self.cache_dir = Path(folder)
        path = self.cache_dir / CACHE_FILE
        if path.is_file():
            cached = json.loads(path.read_text())
            if cached.get("protocol") == self.meta["protocol"] and cached.get("seeds") == self.seeds:
                self._add_records({k: r for k, r in cached["cells"].items() if complete(r)})

    def _add_records(self, records: dict[str, dict[str, Any]]) -> None:
        self.records.update(records)
        for name in ("seed_accuracies", "mean_accuracies", "seed_counts"):
            self.__dict__.pop(name, None)

    def train(self, genotypes: Iterable[NB201Genotype]) -> None:
        """Train (every seed of the table) the cells of ``genotypes`` that the table does not hold."""
        todo = {g.unique_key(): g for g in genotypes if g.unique_key() not in self.records}
        if not todo:
            return
        if not self.train_missing:
            missing = next(iter(todo.values())).to_arch_str()
            raise KeyError(f"{missing} is not in the FMNIST-201 table {self.path} (train_missing=False).")
        if self._split is None:
            self._split = Split.load(self.protocol)
        fresh = empty_table(self.protocol, self.seeds)
        for g in todo.values():
            for seed in self.seeds:
                add_result(fresh, g, seed, train_cell(g, self.protocol, seed, self._split, self.device), "on demand")
        self._add_records(fresh["cells"])
        if self.cache_dir is not None:
            kept = {k: r for k, r in self.records.items() if k not in self.shipped}
            write_json_atomic(self.cache_dir / CACHE_FILE, {**fresh, "cells": kept})

    # -- per cell ------------------------------------------------------------------------------------
    def __contains__(self, genotype: NB201Genotype) -> bool:
        return not genotype.connected() or genotype.unique_key() in self.records

    def __len__(self) -> int:
        return len(self.records)

    def cells(self) -> list[NB201Genotype]:
        """One cell of every class the table holds (the one that was trained)."""
        return [NB201Genotype.from_arch_str(r["arch"]) for r in self.records.values()]

    def record(self, genotype: NB201Genotype) -> dict[str, Any]:
        """The class's record: ``val_acc``, ``test_acc``, ``train_seconds`` (per seed), ``params``, ``arch``."""
        if not hasattr(genotype, "unique_key"):  # a NAS-Bench-201 cell (the table knows no other space)
            raise ValueError(f"FMNIST-201 holds NAS-Bench-201 cells, got a {genotype.space_name!r}-space genotype.")
        if not genotype.connected():
            n = len(self.seeds)
            return {"arch": genotype.to_arch_str(), "val_acc": [CHANCE] * n, "test_acc": [CHANCE] * n, "params": 0}
        self.train([genotype])
        return self.records[genotype.unique_key()]

    def accuracies(self, genotype: NB201Genotype) -> list[float]:
        """Validation accuracy (%), one value per training seed."""
        return list(self.record(genotype)["val_acc"])

    def accuracy(self, genotype: NB201Genotype) -> float:
        """Validation accuracy (%) averaged over the seeds: the cell's quality."""
        values = self.accuracies(genotype)
        return sum(values) / len(values)

    def test_accuracy(self, genotype: NB201Genotype) -> float:
        """Test accuracy (%) averaged over the seeds."""
        values = self.record(genotype)["test_acc"]
        return sum(values) / len(values)

    def params_m(self, genotype: NB201Genotype) -> float:
        """Parameters of the protocol's network, in millions."""
        net = NB201Network(genotype, 1, 10, self.protocol.channels, self.protocol.cells_per_stage)
        return sum(p.numel() for p in net.parameters()) / 1e6

    def latency_ms(self, genotype: NB201Genotype) -> float:
        """FMNIST-201 records no latency: NaN (a latency budget is refused by ``TableObjective``)."""
        return float("nan")

    # -- whole space ---------------------------------------------------------------------------------
    @cached_property
    def _classes(self) -> list[str | None]:
        """Per cell in table-key order, its class key (None for a disconnected cell)."""
        return [g.unique_key() if g.connected() else None for g in NB201Genotype.all()]

    @cached_property
    def seed_accuracies(self) -> Tensor:
        """[15625, seeds] validation accuracies (%) in table-key order; NaN where the class is not trained."""
        n = len(self.seeds)
        rows = []
        for key in self._classes:
            if key is None:
                rows.append([CHANCE] * n)
            else:
                record = self.records.get(key)
                rows.append(record["val_acc"] if record is not None else [float("nan")] * n)
        return torch.tensor(rows, dtype=torch.float64)

    @cached_property
    def mean_accuracies(self) -> Tensor:
        """[15625] seed-averaged validation accuracies (%); NaN where the class is not trained."""
        return self.seed_accuracies.mean(1)

    @cached_property
    def seed_counts(self) -> Tensor:
        return (~self.seed_accuracies.isnan()).sum(1)

    @cached_property
    def latencies_ms(self) -> Tensor:
        return torch.full((len(self._classes),), float("nan"), dtype=torch.float64)

    def ensure(self, index: Tensor) -> None:
        """Train the cells of ``index`` (table-key order) that the table does not hold."""
        from unas_lightning.spaces.nb201.table import cell_of_index

        missing = self.mean_accuracies[index.reshape(-1)].isnan()
        if bool(missing.any()):
            self.train(cell_of_index(int(i)) for i in index.reshape(-1)[missing].unique())

    def draw_accuracies(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One training seed's validation accuracy per cell of ``index``, the seed drawn uniformly (cells
        outside the table are trained first)."""
        self.ensure(index)
        flat = index.reshape(-1)
        pick = (torch.rand(flat.shape, generator=generator, dtype=torch.float64) * len(self.seeds)).long()
        return self.seed_accuracies[flat, pick].reshape(index.shape)

    def best(self, max_latency_ms: float | None = None) -> tuple[NB201Genotype, float]:
        """The cell of highest mean validation accuracy among those the table holds, and its accuracy."""
        if max_latency_ms is not None:
            raise ValueError("FMNIST-201 records no latency: a latency budget needs a NAS-Bench-201 table.")
        record = max(self.records.values(), key=lambda r: sum(r["val_acc"]))
        return NB201Genotype.from_arch_str(record["arch"]), sum(record["val_acc"]) / len(record["val_acc"])
