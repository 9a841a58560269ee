"""Image-classification data modules for search and retraining.

Fashion-MNIST is the default and works offline: Debian's ``dataset-fashion-mnist`` package puts the
real idx files in ``/usr/share/datasets/fashion-mnist``. MNIST and CIFAR-10/100 are read through
torchvision from a local root; nothing is downloaded unless ``download=True`` is given.

With ``split="search"`` the training set is divided into a search-train part (used for the w-step
and L_train) and a search-val part (L_val), ``train_portion`` of it going to search-train (DARTS and
UNAS use 0.5). ``train_dataloader`` then yields ``{"train": batch, "val": batch}`` each step and the
test set is never touched. With ``split="full"`` (retraining) the whole training set trains and the
test set validates and tests.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sized
from pathlib import Path
from typing import Any, Literal, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from typing_extensions import override

from unas_lightning.data.augment import augment_batch
from unas_lightning.data.loaders import ResumableLoader
from unas_lightning.utils.seeding import seeded, step_seed

FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"


class MissingDatasetError(FileNotFoundError):
    """The data set is not on disk; the message says how to get it."""


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not: a copy of this process's one decompressed read of
    the file (Fashion-MNIST's training images take 0.4 s to decompress; a process that sets up several data
    modules, as tests and benchmarks do, pays it once)."""
    stat = path.stat()
    return _read_idx_once(str(path.resolve()), stat.st_mtime_ns, stat.st_size).copy()


@functools.lru_cache(maxsize=8)
def _read_idx_once(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """The file's array, read-only; a changed file (time or size) is read again."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    array.setflags(write=False)
    return array


def _find_idx(roots: list[Path], stem: str) -> Path | None:
    for root in roots:
        for sub in ("", "raw", "FashionMNIST/raw", "MNIST/raw"):
            for suffix in ("", ".gz"):
                p = root / sub / f"{stem}{suffix}"
                if p.is_file():
                    return p
    return None


class VisionDataModule(L.LightningDataModule):
    """Base class: tensors in memory, a search-train/search-val split and plain DataLoaders.

    Args:
        root: directory holding the data set (default: the data set's usual place).
        split: ``"search"`` (search-train/search-val from the training set) or ``"full"``.
        train_portion: fraction of the training set used as search-train, in (0, 1).
        batch_size: examples per batch (per process under DDP).
        num_workers: DataLoader workers (the data is in memory; 0 is usually fastest on CPU).
        max_train_examples: use only this many training examples (quick runs); None for all.
        split_seed: seed of the search-train/search-val split (independent of the run seed).
        download: let torchvision download the data set into ``root`` (needs internet).
        crop_padding: training augmentation: random crops after zero padding.
        flip: training augmentation: random horizontal flips.
        cutout: training augmentation: cutout square side (0 disables; DARTS uses 16 on CIFAR).
        image_size: resize the images to this many pixels a side (area interpolation, once, in memory), e.g.
            16 for Fashion-MNIST as the FMNIST-201 table trained its cells; None keeps them as they are.
        augment_search: apply the training augmentation to the search batches too (both search-train and
            search-val; the official UNAS code's CIFAR search: crop padding 4 and flips). Its random draws
            are seeded per step, so a resumed search augments exactly as the uninterrupted one. By default
            only ``split="full"`` batches are augmented.
    """

    in_channels: int = 1
    num_classes: int = 10
    image_size: tuple[int, int] = (28, 28)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __init__(
        self,
        root: str | None = None,
        split: Literal["search", "full"] = "search",
        train_portion: float = 0.5,
        batch_size: int = 64,
        num_workers: int = 0,
        max_train_examples: int | None = None,
        split_seed: int = 0,
        download: bool = False,
        crop_padding: int = 0,
        flip: bool = False,
        cutout: int = 0,
        augment_search: bool = False,
        image_size: int | None = None,
    ):
        super().__init__()
        if split not in ("search", "full"):
            raise ValueError(f"split must be 'search' or 'full', got {split!r}.")
        if not 0.0 < train_portion < 1.0:
            raise ValueError(f"train_portion must lie strictly between 0 and 1, got {train_portion}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if max_train_examples is not None and max_train_examples < 2:
            raise ValueError(f"max_train_examples must be >= 2 (or null for all), got {max_train_examples}.")
        self.save_hyperparameters()
        self.root = root
        self.split = split
        self.train_portion = train_portion
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_train_examples = max_train_examples
        self.split_seed = split_seed
        self.download = download
        if crop_padding < 0 or cutout < 0:
            raise ValueError(f"crop_padding and cutout must be >= 0, got {crop_padding} and {cutout}.")
        self.crop_padding, self.flip, self.cutout = crop_padding, flip, cutout
        self.augment_search = bool(augment_search)
        if image_size is not None:
            if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
                raise ValueError(
                    f"image_size must be an integer >= 4 (or null to keep the images), got {image_size!r}."
                )
            self.image_size = (image_size, image_size)
        self._train: Dataset[Any] | None = None
        self._test: Dataset[Any] | None = None

    @property
    def example_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image, e.g. for latency measurement."""
        return (self.in_channels, *self.image_size)

    # -- to implement per data set ----------------------------------------------------------------
    def load_arrays(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """Return uint8 images [N, H, W] or [N, H, W, C] and integer labels [N]."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------
    def _tensors(self, train: bool, limit: int | None = None) -> TensorDataset:
        """The part as normalized float tensors, its first ``limit`` examples only when given."""
        images, labels = self.load_arrays(train)
        images, labels = images[:limit], labels[:limit]
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2).contiguous()
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (x - mean) / std
        if tuple(x.shape[-2:]) != tuple(self.image_size):
            x = torch.nn.functional.interpolate(x, size=self.image_size, mode="area")
        return TensorDataset(x, torch.as_tensor(np.asarray(labels), dtype=torch.long))

    def check_available(self, train: bool) -> None:
        """Raise ``MissingDatasetError`` (saying how to get it) when the part is not on disk. Cheap."""

    @override
    def prepare_data(self) -> None:
        """Download when allowed, then check the data is there: before the trainer creates any log file."""
        if self.download:
            self.load_arrays(train=True)
            self.load_arrays(train=False)
        self.check_parts()

    def check_parts(self) -> None:
        """``check_available`` for every part a run reads: the training part, and with ``split="full"`` (which
        evaluates on the test part during fit) the test part. ``unas-cli`` calls it before it builds the model
        (unless ``download``), so that a missing data set stops a run in a moment."""
        self.check_available(train=True)
        if self.split == "full":
            self.check_available(train=False)

    @override
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self._train is None:
            self._train = self._tensors(train=True, limit=self.max_train_examples)  # only what is used
        if (stage in (None, "test") or self.split == "full") and self._test is None:
            self._test = self._tensors(train=False)

    def search_split(self) -> tuple[Subset[Any], Subset[Any]]:
        """The fixed search-train / search-val partition of the training set."""
        assert self._train is not None, "call setup() first"
        n = len(cast(Sized, self._train))  # map-style data sets in memory or in folders: sized
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        n_train = min(max(1, round(self.train_portion * n)), n - 1)
        return Subset(self._train, perm[:n_train]), Subset(self._train, perm[n_train:])

    def _loader(self, ds: Dataset[Any], shuffle: bool) -> DataLoader[Any]:
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on the device: full-split ones, and search ones with ``augment_search``."""
        trainer = self.trainer
        if trainer is None or not (trainer.training and (self.crop_padding or self.flip or self.cutout)):
            return batch
        if self.split == "full":
            x, y = batch
            return augment_batch(x, self.crop_padding, self.flip, self.cutout), y
        if self.augment_search and isinstance(batch, dict):
            seed = step_seed(self.split_seed, trainer.current_epoch, trainer.global_step, trainer.global_rank)
            with seeded(seed, next(iter(batch.values()))[0].device):
                batch = {
                    k: (augment_batch(x, self.crop_padding, self.flip, self.cutout), y) for k, (x, y) in batch.items()
                }
        return batch

    def _resumable(self, ds: Dataset[Any]) -> ResumableLoader:
        """A shuffled training loader that resumes mid-epoch; sharded per process under DDP."""
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return ResumableLoader(
            ds, batch_size=self.batch_size, num_replicas=replicas, rank=rank, num_workers=self.num_workers
        )

    @override
    def train_dataloader(self) -> ResumableLoader | CombinedLoader:
        if self.split == "full":
            return self._resumable(cast("Dataset[Any]", self._train))  # set in setup
        search_train, search_val = self.search_split()
        return CombinedLoader(
            {"train": self._resumable(search_train), "val": self._resumable(search_val)}, mode="max_size_cycle"
        )

    @override
    def val_dataloader(self) -> DataLoader[Any]:
        if self.split == "full":
            return self._loader(cast("Dataset[Any]", self._test), shuffle=False)  # set in setup
        return self._loader(self.search_split()[1], shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader(cast("Dataset[Any]", self._test), shuffle=False)  # set in setup


class _IdxDataModule(VisionDataModule):
    """MNIST-format data sets (idx files), read without torchvision's folder conventions."""

    name = ""
    debian_root: str | None = None
    debian_package: str | None = None
    torchvision_class = ""

    def _roots(self) -> list[Path]:
        """Where the idx files are looked for: the root the user named, and only it; else the system copy."""
        if self.root:
            return [Path(self.root).expanduser()]
        return [Path(self.debian_root)] if self.debian_root else []

    def _files(self, train: bool) -> tuple[Path | None, Path | None]:
        prefix = "train" if train else "t10k"
        return _find_idx(self._roots(), f"{prefix}-images-idx3-ubyte"), _find_idx(
            self._roots(), f"{prefix}-labels-idx1-ubyte"
        )

    def check_available(self, train: bool) -> None:
        images, labels = self._files(train)
        if images is None or labels is None:
            prefix = "train" if train else "t10k"
            where = ", ".join(str(r) for r in self._roots()) or "(no root given)"
            how = f"`apt-get install {self.debian_package}` (Debian) or " if self.debian_package else ""
            system = ""
            if self.root and self.debian_root and _find_idx([Path(self.debian_root)], f"{prefix}-images-idx3-ubyte"):
                system = f" (A system copy exists in {self.debian_root}: leave --data.init_args.root unset to use it.)"
            raise MissingDatasetError(
                f"{self.name} not found in {where}. Install it with {how}pass --data.init_args.root DIR where DIR "
                f"holds {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz], or allow a download "
                f"with --data.init_args.download true.{system}"
            )

    def load_arrays(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self._files(train)
        if (images is None or labels is None) and self.download:
            import torchvision

            if not self.root:
                raise ValueError(f"download=True needs a root directory to download {self.name} into.")
            getattr(torchvision.datasets, self.torchvision_class)(self.root, train=train, download=True)
            images, labels = self._files(train)
        self.check_available(train)  # raises unless both files were found
        return _read_idx(cast(Path, images)), _read_idx(cast(Path, labels))


class FashionMNISTDataModule(_IdxDataModule):
    """Fashion-MNIST (1x28x28, 10 classes), the offline default (Debian ``dataset-fashion-mnist``)."""

    name = "Fashion-MNIST"
    debian_root = FASHION_MNIST_DEBIAN
    debian_package = "dataset-fashion-mnist"
    torchvision_class = "FashionMNIST"
    mean, std = (0.2860,), (0.3530,)


class MNISTDataModule(_IdxDataModule):
    """MNIST (1x28x28, 10 classes) from a local root in torchvision's or the raw idx layout."""

    name = "MNIST"
    torchvision_class = "MNIST"
    mean, std = (0.1307,), (0.3081,)


class CIFAR10DataModule(VisionDataModule):
    """CIFAR-10 (3x32x32) from a local torchvision root (``cifar-10-batches-py``)."""

    in_channels, num_classes = 3, 10
    image_size = (32, 32)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    torchvision_class = "CIFAR10"
    folder = "cifar-10-batches-py"

    def check_available(self, train: bool) -> None:
        if not self.root:
            raise MissingDatasetError(
                f"{self.torchvision_class} needs --data.init_args.root DIR (the folder holding the torchvision "
                "python-version batches); add --data.init_args.download true to fetch it there."
            )
        if not (Path(self.root).expanduser() / self.folder).is_dir():
            raise MissingDatasetError(
                f"{self.torchvision_class} not found under {self.root}: no {self.folder} folder. Put the extracted "
                "python-version archive there, or add --data.init_args.download true."
            )

    def load_arrays(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        import torchvision

        if not self.download:
            self.check_available(train)
        try:
            ds = getattr(torchvision.datasets, self.torchvision_class)(self.root, train=train, download=self.download)
        except RuntimeError as err:
            raise MissingDatasetError(
                f"{self.torchvision_class} not found under {self.root}: {err} Put the extracted python-version "
                "archive there, or add --data.init_args.download true."
            ) from err
        return ds.data, np.asarray(ds.targets)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (3x32x32, 100 classes) from a local torchvision root."""

    num_classes = 100
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    torchvision_class = "CIFAR100"
    folder = "cifar-100-python"


class ImageNetDataModule(VisionDataModule):
    """ImageNet (or any class-per-folder image set) from ``root/train`` and ``root/val`` folders.

    Images are decoded by worker processes with torchvision transforms (random-resized crops and flips
    for training, resize + centre crop for evaluation) instead of living in memory. ``split="search"``
    splits ``root/train`` into search-train and search-val as for the other data sets, both with the
    evaluation transform (random crops with ``augment_search``); ``"full"`` trains on ``root/train`` and
    evaluates on ``root/val``.

    Args:
        image_size: side of the square crops (224 for ImageNet; smaller for proxies).
        num_classes: number of class folders (1000 for ImageNet).
        (the rest as for ``VisionDataModule``)
    """

    in_channels = 3
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, *args: Any, image_size: int = 224, num_classes: int = 1000, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.num_classes = num_classes
        self.image_size = (image_size, image_size)

    def check_available(self, train: bool) -> None:
        """The folder exists and every class sub-folder holds an image (one directory listing per class)."""
        path = Path(self.root or "").expanduser() / ("train" if train else "val")
        layout = "hold one sub-folder of images per class (ImageNet cannot be downloaded automatically)"
        if not self.root or not path.is_dir():
            raise MissingDatasetError(
                f"ImageNet folder {path} not found: pass --data.init_args.root DIR where DIR/train and DIR/val "
                f"{layout}."
            )
        classes = sorted(p for p in path.iterdir() if p.is_dir())
        empty = [c.name for c in classes if not any(_is_image(f) for f in c.iterdir())]
        if not classes or empty:
            found = f"{len(empty)} of its {len(classes)} class folders hold no image (e.g. {', '.join(empty[:3])})"
            raise MissingDatasetError(
                f"ImageNet folder {path}: {found if classes else 'it has no class folders'}; DIR/train and DIR/val "
                f"must {layout}."
            )

    def _folder(self, part: str, train: bool) -> Any:  # a torchvision ImageFolder
        import torchvision
        from torchvision import transforms as T

        self.check_available(train)
        path = Path(self.root or "").expanduser() / part
        size = self.image_size[0]
        normalize = T.Normalize(self.mean, self.std)
        if train:
            tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
        else:
            tf = T.Compose([T.Resize(int(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), normalize])
        ds = torchvision.datasets.ImageFolder(str(path), transform=tf)
        if len(ds.classes) != self.num_classes:
            raise ValueError(
                f"{path} has {len(ds.classes)} class folders but num_classes={self.num_classes}; "
                f"set --data.init_args.num_classes {len(ds.classes)}."
            )
        return ds

    @override
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self._train is None:
            # search batches get the evaluation transform (as in the official UNAS code) unless augment_search
            full = self._folder("train", train=self.split == "full" or self.augment_search)
            if self.max_train_examples is not None and self.max_train_examples < len(full):
                full = Subset(full, range(self.max_train_examples))
            self._train = full
        if (stage in (None, "test") or self.split == "full") and self._test is None:
            self._test = self._folder("val", train=False)


def _is_image(path: Path) -> bool:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return path.is_file() and path.suffix.lower() in IMG_EXTENSIONS


def batch_size_of(batch: tuple[Tensor, Tensor]) -> int:
    """Examples in a batch ``(x, y)``."""
    return int(batch[0].shape[0])
