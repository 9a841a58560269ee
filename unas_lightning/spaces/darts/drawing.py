"""Drawings of a DARTS-space cell (paper Fig. 3): a matplotlib PNG and Graphviz DOT (PDF with ``dot``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt

from unas_lightning.spaces.darts.genotype import DartsGenotype
from unas_lightning.spaces.drawing import box, save


def draw_cell(genotype: DartsGenotype, cell_type: str, path: str | os.PathLike) -> Path:
    """Draw the ``"normal"`` or ``"reduce"`` cell of a genotype into an image file.

    Its two inputs, its intermediate nodes and the concatenated output, each edge labelled with its operation.
    """
    nodes = genotype.nodes(cell_type)
    n = len(nodes)
    pos = {0: (0.0, n * 0.9), 1: (0.0, 0.0)}
    for i in range(n):
        pos[i + 2] = (2.2 + 1.6 * i, n * 0.45 + (0.6 if i % 2 else -0.6))
    out_pos = (2.2 + 1.6 * n, n * 0.45)
    fig, ax = plt.subplots(figsize=(2.2 + 1.7 * n, 1.2 + 0.8 * n))
    for i, node in enumerate(nodes):
        same = node.inputs[0] == node.inputs[1]
        for j, (src, op) in enumerate(zip(node.inputs, node.ops, strict=True)):
            (x0, y0), (x1, y1) = pos[src], pos[i + 2]
            bend = (0.25 if j == 0 else -0.25) if same else 0.0
            style = {"arrowstyle": "->", "lw": 1, "connectionstyle": f"arc3,rad={bend}"}
            ax.annotate("", xy=(x1 - 0.45, y1), xytext=(x0 + 0.45, y0), arrowprops=style)
            dy = (-0.22 if j == 0 else 0.22) if same else 0.08
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + dy, op, fontsize=7, ha="center", color="#08306b")
        (x1, y1) = pos[i + 2]
        ax.annotate(
            "",
            xy=(out_pos[0] - 0.45, out_pos[1]),
            xytext=(x1 + 0.45, y1),
            arrowprops={"arrowstyle": "->", "color": "gray"},
        )
    box(ax, pos[0], "c_{k-2}", "#a1d99b")
    box(ax, pos[1], "c_{k-1}", "#a1d99b")
    for i in range(n):
        box(ax, pos[i + 2], str(i), "#bcbddc")
    box(ax, out_pos, "c_{k}", "#fee391")
    ax.set_title(f"{cell_type} cell")
    ax.set_xlim(-0.8, out_pos[0] + 0.8)
    ax.set_ylim(-0.8, n * 0.9 + 0.8)
    ax.axis("off")
    return save(fig, path)


def cell_dot(genotype: DartsGenotype, cell_type: str) -> str:
    """Graphviz DOT text of a cell: inputs c_{k-2}, c_{k-1}, intermediate nodes, output c_{k}."""
    lines = [
        "digraph cell {",
        '  rankdir=LR; node [style="rounded,filled", shape=rect, fontname=helvetica];',
        '  edge [fontname=helvetica, fontsize=10]; "c_{k-2}" [fillcolor=darkseagreen2];',
        '  "c_{k-1}" [fillcolor=darkseagreen2]; "c_{k}" [fillcolor=palegoldenrod];',
    ]
    names = {0: "c_{k-2}", 1: "c_{k-1}"}
    nodes = genotype.nodes(cell_type)
    for i, node in enumerate(nodes):
        names[i + 2] = str(i)
        lines.append(f'  "{i}" [fillcolor=lightblue];')
        for src, op in zip(node.inputs, node.ops, strict=True):
            lines.append(f'  "{names[src]}" -> "{i}" [label="{op}"];')
    lines += [f'  "{i}" -> "c_{{k}}" [color=gray];' for i in range(len(nodes))]
    return "\n".join([*lines, "}"]) + "\n"


def write_cell_dot(genotype: DartsGenotype, cell_type: str, path: str | os.PathLike) -> list[Path]:
    """Write the cell's DOT file and, when Graphviz is installed, its PDF rendering; returns the files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cell_dot(genotype, cell_type))
    written = [path]
    dot = shutil.which("dot")
    if dot is not None:
        pdf = path.with_suffix(".pdf")
        subprocess.run([dot, "-Tpdf", str(path), "-o", str(pdf)], check=True, capture_output=True)
        written.append(pdf)
    return written
