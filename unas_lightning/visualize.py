"""Drawings of genotypes: a DARTS-space cell (paper Fig. 3) and a ProxylessNAS-space network (Fig. 5).

    python -m unas_lightning.visualize runs/quickstart/version_0/genotype.json        # writes PNGs next to it
    python -m unas_lightning.visualize UNAS_CIFAR10 --out figures/

Every drawing is a matplotlib PNG (no extra dependency): a cell as its two inputs, its intermediate
nodes and the concatenated output, each edge labelled with its operation; a ProxylessNAS network as its
chain of MBConv blocks (height ~ expansion, colour ~ kernel size; removed layers left out). A cell is also
written as Graphviz DOT text (``*.dot``, the layout of the DARTS paper's figures), rendered to PDF when
Graphviz's ``dot`` program is installed (``apt-get install graphviz``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from unas_lightning.genotypes import load_genotype
from unas_lightning.spaces.darts_genotype import CELL_TYPES, DartsGenotype
from unas_lightning.spaces.proxyless_genotype import SKIP, ProxylessGenotype, parse_op

KERNEL_COLOURS = {3: "#9ecae1", 5: "#fdae6b", 7: "#e6550d"}


def _box(ax, xy, text, colour):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - 0.45, y - 0.22), 0.9, 0.44, boxstyle="round,pad=0.05", fc=colour, ec="black"))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def draw_cell(genotype: DartsGenotype, cell_type: str, path: str | os.PathLike) -> Path:
    """Draw the ``"normal"`` or ``"reduce"`` cell of a genotype into an image file."""
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
    _box(ax, pos[0], "c_{k-2}", "#a1d99b")
    _box(ax, pos[1], "c_{k-1}", "#a1d99b")
    for i in range(n):
        _box(ax, pos[i + 2], str(i), "#bcbddc")
    _box(ax, out_pos, "c_{k}", "#fee391")
    ax.set_title(f"{cell_type} cell")
    ax.set_xlim(-0.8, out_pos[0] + 0.8)
    ax.set_ylim(-0.8, n * 0.9 + 0.8)
    ax.axis("off")
    return _save(fig, path)


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


def draw_proxyless(genotype: ProxylessGenotype, path: str | os.PathLike) -> Path:
    """Draw the MBConv chain of a ProxylessNAS-space genotype (skipped layers removed)."""
    kept = [(i, op) for i, op in enumerate(genotype.ops) if op != SKIP]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * (len(kept) + 2), 2.6))
    x = 0.0
    _box(ax, (x, 0), "stem", "#d9d9d9")
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
    _box(ax, (x, 0), "head", "#d9d9d9")
    ax.set_xlim(-0.6, x + 0.6)
    ax.set_ylim(-1.2, 1.2)
    ax.set_title(
        f"{len(kept)} MBConv layers ({len(genotype.ops) - len(kept)} removed); height ~ expansion, colour ~ kernel"
    )
    ax.axis("off")
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw(name_or_path: str, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draw a genotype (published name or JSON path); files go to ``out_dir`` (default: next to the JSON)."""
    genotype = load_genotype(name_or_path)
    source = Path(name_or_path)
    out = Path(out_dir) if out_dir is not None else (source.parent if source.suffix == ".json" else Path("."))
    stem = source.stem
    if isinstance(genotype, DartsGenotype):
        files = []
        for t in CELL_TYPES:
            files.append(draw_cell(genotype, t, out / f"{stem}_{t}.png"))
            files += write_cell_dot(genotype, t, out / f"{stem}_{t}.dot")
        return files
    return [draw_proxyless(genotype, out / f"{stem}_network.png")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw a genotype (a cell like Fig. 3, a network like Fig. 5).")
    parser.add_argument("genotype", help="a genotype JSON path or a published name such as UNAS_CIFAR10")
    parser.add_argument("--out", default=None, help="output folder (default: next to the JSON file)")
    args = parser.parse_args(argv)
    for path in draw(args.genotype, args.out):
        print(path)


if __name__ == "__main__":
    main()
