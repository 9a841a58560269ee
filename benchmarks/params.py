"""Parameters and multiply-adds of the evaluation networks of the published genotypes, next to the literature.

    python benchmarks/params.py

Parameters exclude the auxiliary head (as DARTS and UNAS report). Multiply-adds are counted with
``torch.utils.flop_counter`` (FLOPs / 2: convolutions and linear layers; batch norm, pooling and
element-wise additions are not counted), for one image (32x32 CIFAR, 224x224 ImageNet).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unas_lightning.genotypes import load_genotype
from unas_lightning.spaces import ProxylessNet
from unas_lightning.spaces.darts import DartsNetworkCIFAR, DartsNetworkImageNet
from unas_lightning.utils.network_size import count_parameters, multiply_adds

# (name, network, published params in M, published multiply-adds in M, source)
ROWS = [
    ("DARTS_V1", "CIFAR-10 (36 x 20)", 3.3, None, "DARTS paper, Table 1 (first order)"),
    ("DARTS_V2", "CIFAR-10 (36 x 20)", 3.3, None, "DARTS paper, Table 1"),
    ("UNAS_CIFAR10", "CIFAR-10 (36 x 20)", None, None, ""),
    ("UNAS_CIFAR100", "CIFAR-100 (36 x 20)", None, None, ""),
    ("DARTS_V2", "ImageNet mobile (48 x 14)", 4.7, 574, "DARTS paper, Table 3"),
    ("UNAS_IMAGENET", "ImageNet mobile (48 x 14)", None, None, ""),
    ("PROXYLESS_GPU", "ImageNet (ProxylessNAS space)", 7.1, None, "ProxylessNAS paper, Table 2"),
    ("UNAS_PROXYLESS", "ImageNet (ProxylessNAS space)", None, None, ""),
]


def build(name: str, network: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    genotype = load_genotype(name)
    if network.startswith("CIFAR"):
        return DartsNetworkCIFAR(genotype, 3, 100 if "100" in network else 10), (3, 32, 32)
    if network.startswith("ImageNet mobile"):
        return DartsNetworkImageNet(genotype, 3, 1000), (3, 224, 224)
    return ProxylessNet(genotype, 3, 1000), (3, 224, 224)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)  # --help, and no stray arguments
    print("`python benchmarks/params.py`\n")
    print("| genotype | network | params (M) | published | diff | multiply-adds (M) | published | source |")
    print("|---|---|---|---|---|---|---|---|")
    for name, network, pub_params, pub_madds, source in ROWS:
        model, shape = build(name, network)
        params = count_parameters(model) / 1e6
        madds = multiply_adds(model, shape) / 1e6
        diff = f"{100 * (params / pub_params - 1):+.1f}%" if pub_params else ""
        print(
            f"| {name} | {network} | {params:.2f} | {pub_params or ''} | {diff} | {madds:.0f} | "
            f"{pub_madds or ''} | {source} |"
        )


if __name__ == "__main__":
    main()
