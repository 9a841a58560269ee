"""unas_lightning: UNAS (Vahdat et al., CVPR 2020) neural architecture search on PyTorch Lightning."""

from unas_lightning.data.datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageNetDataModule,
    MNISTDataModule,
    VisionDataModule,
)
from unas_lightning.retrain import RetrainModule
from unas_lightning.search.module import SearchModule
from unas_lightning.search.tabular import TabularSearch

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageNetDataModule",
    "MNISTDataModule",
    "RetrainModule",
    "SearchModule",
    "TabularSearch",
    "VisionDataModule",
]
__version__ = "0.1.0"
