"""RetrainModule: train the network derived from a genotype from scratch (paper Sec. 4 and 5)."""

from __future__ import annotations

import math
import os
from typing import cast

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from unas_lightning.genotypes import load_genotype
from unas_lightning.spaces.genotype import NetworkOptions, SupportsDropPath
from unas_lightning.utils.network_size import count_parameters, multiply_adds


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_epochs: int, max_epochs: int, min_factor: float = 0.0
) -> LambdaLR:
    """Linear warm-up over ``warmup_epochs`` then cosine decay to ``min_factor`` (per-epoch LambdaLR)."""

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        t = (epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class RetrainModule(L.LightningModule):
    """Train the derived network of a genotype from scratch (the evaluation phase of NAS).

    The network is whatever the genotype's space builds (``Genotype.network``): the DARTS evaluation
    network (CIFAR: 20 cells of 36 channels; ImageNet mobile: 14 cells of 48 channels; auxiliary head
    and drop-path) for a DARTS-space genotype, the plain MBConv network for a ProxylessNAS-space one,
    the network of a user's own space for its genotypes. The recipe follows DARTS/UNAS: SGD with momentum
    and weight decay, a cosine schedule with optional warm-up, gradient clipping, the auxiliary loss
    weighted by ``auxiliary_weight``, drop-path ramped linearly to ``drop_path_prob``, optional label
    smoothing (ImageNet). Augmentation (crop, flip, cutout) lives in the data module.

    Args:
        genotype: a published name (``UNAS_CIFAR10``, ``DARTS_V2``, ``PROXYLESS_GPU``, ...), a path to a
            genotype JSON (e.g. a search's ``genotype.json``) or a genotype's dict. The hyperparameters,
            and so every checkpoint, hold the genotype itself (its dict), not the name or path: a
            checkpoint tests and resumes after the JSON file has moved, and ``unas-cli test --ckpt_path``
            rebuilds the network the weights belong to.
        network: which network of the genotype's space: ``"auto"`` (its first: the CIFAR network for
            DARTS genotypes, the MBConv network for ProxylessNAS ones), or one of its ``network_kinds``
            (DARTS ``"cifar"``, ``"imagenet"``; ProxylessNAS ``"proxyless"``).
        in_channels: image channels (must match the data).
        num_classes: classes (must match the data).
        channels: initial channels of a DARTS network (CIFAR 36, ImageNet 48).
        layers: cells of a DARTS network (CIFAR 20, ImageNet 14).
        auxiliary_weight: weight of the auxiliary head's loss (0 removes the head; paper 0.4).
        drop_path_prob: final drop-path probability (DARTS networks; paper 0.2 on CIFAR).
        label_smoothing: cross-entropy label smoothing (ImageNet recipe: 0.1).
        dropout: dropout before the classifier (ProxylessNAS networks).
        grad_clip: max gradient norm (None disables).
        warmup_epochs: linear learning-rate warm-up epochs of the default schedule.
        optimizer: optimizer factory (default SGD lr 0.025, momentum 0.9, weight decay 3e-4).
        scheduler: LR scheduler factory (default warm-up + cosine over ``max_epochs``).
        channels_last: run the network in the channels-last memory format (faster depthwise
            convolutions on CPU, the fast layout for cuDNN).

    Examples:
        >>> module = RetrainModule("DARTS_V2", in_channels=1, channels=8, layers=5)
        >>> module.num_parameters > 0
        True
    """

    def __init__(
        self,
        genotype: dict | str | os.PathLike = "UNAS_CIFAR10",
        network: str = "auto",
        in_channels: int = 3,
        num_classes: int = 10,
        channels: int = 36,
        layers: int = 20,
        auxiliary_weight: float = 0.4,
        drop_path_prob: float = 0.2,
        label_smoothing: float = 0.0,
        dropout: float = 0.0,
        grad_clip: float | None = 5.0,
        warmup_epochs: int = 0,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        channels_last: bool = True,
    ):
        super().__init__()
        for name, value, low, high in [
            ("auxiliary_weight", auxiliary_weight, 0.0, math.inf),
            ("drop_path_prob", drop_path_prob, 0.0, 1.0),
            ("label_smoothing", label_smoothing, 0.0, 1.0),
            ("dropout", dropout, 0.0, 1.0),
        ]:
            if not low <= value < high:
                raise ValueError(f"{name} must lie in [{low}, {high}), got {value}.")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {grad_clip}.")
        self.genotype = load_genotype(genotype)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams["genotype"] = self.genotype.to_dict()
        options = NetworkOptions(in_channels, num_classes, network, channels, layers, auxiliary_weight > 0, dropout)
        self.net = self.genotype.network(options)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        top_k = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro")
                for stage in ("train", "val", "test")
                for name, k in (("top1", 1), ("top5", top_k))
            }
        )

    @property
    def num_parameters(self) -> int:
        """Parameters of the network without the auxiliary head (as papers report)."""
        return count_parameters(self.net)

    def multiply_adds(self) -> int:
        """Multiply-adds of one forward pass of one image (``counting.multiply_adds``)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return multiply_adds(self.net, getattr(dm, "example_shape", None) or (self.in_channels, 32, 32))

    # -- setup -------------------------------------------------------------------------------------
    @override
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        for attr in ("num_classes", "in_channels"):
            want, have = getattr(dm, attr, None), getattr(self, attr)
            if want is not None and want != have:
                raise ValueError(
                    f"the data has {attr}={want} but the network was built with {attr}={have}; "
                    f"set --model.init_args.{attr} {want}."
                )
        if dm is not None and getattr(dm, "split", "full") != "full":
            raise ValueError("retraining uses the whole training set: set --data.init_args.split full.")

    @override
    def on_fit_start(self) -> None:
        """Log the network's size once (parameters without the auxiliary head, multiply-adds)."""
        stats = {"model/params_M": self.num_parameters / 1e6, "model/madds_M": self.multiply_adds() / 1e6}
        if self.logger is not None and self.trainer.is_global_zero:
            self.logger.log_metrics(stats, step=0)
        rank_zero_info(
            f"retraining {type(self.net).__name__}: {stats['model/params_M']:.2f}M parameters, "
            f"{stats['model/madds_M']:.0f}M multiply-adds per image"
        )

    @override
    def configure_optimizers(self) -> tuple[list[Optimizer], list[LRScheduler | ReduceLROnPlateau]]:
        params = self.parameters()
        if self.optimizer_factory is not None:
            opt = self.optimizer_factory(params)
        else:
            opt = torch.optim.SGD(params, lr=0.025, momentum=0.9, weight_decay=3e-4)
        if self.scheduler_factory is not None:
            return [opt], [self.scheduler_factory(opt)]
        max_epochs = max(1, self.trainer.max_epochs or 1)
        return [opt], [warmup_cosine(opt, self.hparams["warmup_epochs"], max_epochs)]

    # -- steps -------------------------------------------------------------------------------------
    @override
    def on_train_epoch_start(self) -> None:
        if isinstance(self.net, SupportsDropPath):
            max_epochs = max(1, self.trainer.max_epochs or 1)
            self.net.drop_path_prob = self.hparams["drop_path_prob"] * self.current_epoch / max_epochs

    @override
    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        out = self(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = self.loss(logits, y)
        if aux is not None:
            loss = loss + self.hparams["auxiliary_weight"] * self.loss(aux, y)
        self._update("train", logits, y)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    @override
    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        clip = self.hparams["grad_clip"] if gradient_clip_val is None else gradient_clip_val
        if clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", self.loss(logits, y), batch_size=x.shape[0], sync_dist=True)
        self._update(stage, logits, y)

    def _update(self, stage: str, logits: Tensor, y: Tensor) -> None:
        for name in ("top1", "top5"):
            metric = cast(Metric, self.metrics[f"{stage}_{name}"])
            metric(logits.detach(), y)
            self.log(f"{stage}/acc_{name}", metric, prog_bar=name == "top1", batch_size=y.shape[0])

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")
