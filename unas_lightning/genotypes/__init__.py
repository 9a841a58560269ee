"""Published genotypes shipped as JSON, and loading any genotype by name or path.

DARTS space: ``DARTS_V1``, ``DARTS_V2`` (Liu et al. 2019), ``UNAS_CIFAR10``, ``UNAS_CIFAR100`` and
``UNAS_IMAGENET`` (the cells of paper Fig. 3, the last one in the 5-op ImageNet space).

ProxylessNAS space (backbone of the official UNAS code and of ProxylessNAS-GPU: stem 40, first block
24, stage widths 32-56-112-128-256-432, feature mix 1728):

* ``PROXYLESS_GPU``: ProxylessNAS-GPU (Cai et al. 2019), 13 MBConv layers, 7.1M parameters.
* ``UNAS_PROXYLESS``: the network UNAS found in that space for a V100 (paper Fig. 5), 16 layers.

Both are transcribed from the official UNAS code (``proxylessnas/genotypes.py``), whose per-layer
lists are split into the 6 shape-changing and the 15 other layers.

NAS-Bench-201 space (``NB201Genotype``; "true" accuracies from the benchmark's table, cifar10-valid):

* ``NB201_RESNET``: the benchmark's ResNet cell (node 1 = conv(input), node 2 = conv(node 1), output =
  input + node 2): ``|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|``,
  90.86% on CIFAR-10.
* ``NB201_BEST_CIFAR10``, ``NB201_BEST_CIFAR100``: the cells of highest seed-averaged validation accuracy
  in the table (91.61% on CIFAR-10, 73.49% on CIFAR-100), the optimum a search aims at.

A file names its space (``"space"``) and, for a space defined outside this package, the genotype
type that reads it (``"type": "module.Class"``): loading dispatches through the registry of
``unas_lightning.spaces.genotype``, never on concrete classes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import unas_lightning.spaces  # noqa: F401  (registers the built-in spaces' genotype types)
from unas_lightning.spaces.genotype import Genotype

HERE = Path(__file__).resolve().parent


def published() -> list[str]:
    """Names of the genotypes shipped with the package."""
    return sorted(p.stem for p in HERE.glob("*.json"))


def genotype_from_dict(data: dict) -> Genotype:
    """A genotype of whichever space its ``"space"`` field names."""
    return Genotype.from_dict(data)


def load_genotype(name_or_path: str | os.PathLike | dict) -> Genotype:
    """Load a published genotype by name (e.g. ``"PROXYLESS_GPU"``), a genotype JSON file by path, or
    a genotype's dict (``Genotype.to_dict()``, as a retrain checkpoint stores it).

    Examples:
        >>> load_genotype("PROXYLESS_GPU").depth()
        13
        >>> load_genotype(load_genotype("DARTS_V2").to_dict()) == load_genotype("DARTS_V2")
        True
    """
    if isinstance(name_or_path, dict):
        return genotype_from_dict(name_or_path)
    text = str(name_or_path)
    path = HERE / f"{text}.json" if text in published() else Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no genotype {text!r}: give a JSON file path or one of {published()}.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    return genotype_from_dict(data)


__all__ = ["Genotype", "genotype_from_dict", "load_genotype", "published"]
