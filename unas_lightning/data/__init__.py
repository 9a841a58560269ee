"""Data: the vision data modules (Fashion-MNIST offline by default), resumable loaders, batch augmentation."""

from unas_lightning.data.datamodules import (
    FASHION_MNIST_DEBIAN,
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageNetDataModule,
    MissingDatasetError,
    MNISTDataModule,
    VisionDataModule,
    batch_size_of,
)

__all__ = [
    "FASHION_MNIST_DEBIAN",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageNetDataModule",
    "MNISTDataModule",
    "MissingDatasetError",
    "VisionDataModule",
    "batch_size_of",
]
