"""Drawing of a NAS-Bench-201 cell: its 4 nodes and the operation on each edge that is not ``none``."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from unas_lightning.spaces.drawing import box, save
from unas_lightning.spaces.nb201.genotype import EDGES, NODES, NB201Genotype
from unas_lightning.spaces.nb201.ops import NONE

OP_COLOURS = {
    "skip_connect": "#bdbdbd",
    "nor_conv_1x1": "#9ecae1",
    "nor_conv_3x3": "#3182bd",
    "avg_pool_3x3": "#fdae6b",
}


def draw_cell(genotype: NB201Genotype, path: str | os.PathLike) -> Path:
    """Nodes left to right, one arc per edge labelled with its operation (``none`` edges left out)."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    xs = [2.0 * n for n in range(NODES)]
    for (to, frm), op in zip(EDGES, genotype.ops, strict=True):
        if op == NONE:
            continue
        height = 0.35 * (to - frm)  # the arc's curvature; its peak is height * chord / 2 above the line
        chord = xs[to] - xs[frm] - 0.9
        ax.annotate(
            "",
            xy=(xs[to] - 0.45, 0.05),
            xytext=(xs[frm] + 0.45, 0.05),
            arrowprops={"arrowstyle": "->", "color": OP_COLOURS[op], "lw": 2, "connectionstyle": f"arc3,rad=-{height}"},
        )
        ax.text((xs[to] + xs[frm]) / 2, 0.12 + 0.5 * height * chord, op, ha="center", va="bottom", fontsize=8)
    for n, x in enumerate(xs):
        box(ax, (x, 0), "input" if n == 0 else ("output" if n == NODES - 1 else f"node {n}"), "#d9d9d9")
    ax.set_xlim(-0.8, xs[-1] + 0.8)
    ax.set_ylim(-0.6, 3.4)
    ax.set_title(genotype.to_arch_str(), fontsize=7)
    ax.axis("off")
    return save(fig, path)
