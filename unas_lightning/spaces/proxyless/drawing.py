"""Drawing of a ProxylessNAS-space network (paper Fig. 5): its chain of MBConv blocks."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from unas_lightning.spaces.drawing import box, save
from unas_lightning.spaces.proxyless.genotype import SKIP, ProxylessGenotype, parse_op

KERNEL_COLOURS = {3: "#9ecae1", 5: "#fdae6b", 7: "#e6550d"}


def draw_network(genotype: ProxylessGenotype, path: str | os.PathLike) -> Path:
    """Draw the MBConv chain of a genotype: height ~ expansion, colour ~ kernel size, removed layers left out."""
    kept = [(i, op) for i, op in enumerate(genotype.ops) if op != SKIP]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * (len(kept) + 2), 2.6))
    x = 0.0
    box(ax, (x, 0), "stem", "#d9d9d9")
    for i, op in kept:
        x += 0.6
        kernel, expand = parse_op(op)
        height = 0.5 + 0.15 * expand
        ax.add_patch(
            FancyBboxPatch(
                (x - 0.22, -height / 2), 0.44, height, boxstyle="round,pad=0.02", fc=KERNEL_COLOURS[kernel], ec="black"
            )
        )
        ax.text(x, 0, f"MB{expand} {kernel}x{kernel}", rotation=90, ha="center", va="center", fontsize=7)
        ax.text(x, -height / 2 - 0.15, str(i), ha="center", fontsize=6, color="gray")
    x += 0.8
    box(ax, (x, 0), "head", "#d9d9d9")
    ax.set_xlim(-0.6, x + 0.6)
    ax.set_ylim(-1.2, 1.2)
    ax.set_title(
        f"{len(kept)} MBConv layers ({len(genotype.ops) - len(kept)} removed); height ~ expansion, colour ~ kernel"
    )
    ax.axis("off")
    return save(fig, path)
