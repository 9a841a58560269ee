"""Genotypes of the factorized DARTS cell, read and written as JSON.

A genotype lists, for the normal and the reduction cell, each node's two input indices (0 and 1 are
the cell inputs c_{k-2} and c_{k-1}, 2.. the earlier nodes) and two operation names::

    {"space": "darts",
     "normal": [{"inputs": [0, 1], "ops": ["sep_conv_3x3", "skip_connect"]}, ...],
     "reduce": [...]}

All intermediate nodes are concatenated into the cell output, as in DARTS.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from unas_lightning.spaces.darts.ops import OPS
from unas_lightning.spaces.genotype import Drawable, Genotype, NetworkOptions

CELL_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class Node:
    """One intermediate node: ``ops[j]`` is applied to state ``inputs[j]``, the two results are summed."""

    inputs: tuple[int, int]
    ops: tuple[str, str]


@dataclass(frozen=True)
class DartsGenotype(Genotype, Drawable):
    """A normal and a reduction cell of the factorized DARTS space (Sec. 4.1).

    Its networks (``network_kinds``): ``"cifar"`` (the default: 20 cells of 36 channels) and
    ``"imagenet"`` (the mobile setting: 14 cells of 48 channels), with an auxiliary head and drop-path.
    """

    space_name = "darts"
    space_title = "DARTS"
    network_kinds = ("cifar", "imagenet")

    normal: tuple[Node, ...]
    reduce: tuple[Node, ...]

    def nodes(self, cell_type: str) -> tuple[Node, ...]:
        return self.normal if cell_type == "normal" else self.reduce

    def check(self, nodes: int | None, ops: Collection[str]) -> None:
        """Raise ``ValueError`` naming the first thing that does not fit a space with ``nodes`` (None: any
        number) and ``ops``."""
        for t in CELL_TYPES:
            cell = self.nodes(t)
            if not cell:
                raise ValueError(f"genotype {t} cell has no nodes; a cell needs at least one.")
            if nodes is not None and len(cell) != nodes:
                raise ValueError(f"genotype {t} cell has {len(cell)} nodes but the space has {nodes}.")
            for n, node in enumerate(cell):
                for i in node.inputs:
                    if not 0 <= i < n + 2:
                        raise ValueError(
                            f"genotype {t} node {n}: input index {i} out of range; node {n} can read states 0..{n + 1}."
                        )
                for o in node.ops:
                    if o not in ops:
                        raise ValueError(f"genotype {t} node {n}: unknown operation {o!r}; choose from {list(ops)}.")

    # -- JSON ------------------------------------------------------------------------------------
    def encode(self) -> dict[str, Any]:
        return {t: [{"inputs": list(n.inputs), "ops": list(n.ops)} for n in self.nodes(t)] for t in CELL_TYPES}

    @classmethod
    def decode(cls, data: dict[str, Any]) -> DartsGenotype:
        cells = {}
        for t in CELL_TYPES:
            if t not in data:
                raise ValueError(f"genotype has no {t!r} cell; expected keys 'normal' and 'reduce'.")
            nodes = []
            for n, node in enumerate(data[t]):
                try:
                    inputs, ops = tuple(int(i) for i in node["inputs"]), tuple(str(o) for o in node["ops"])
                except (KeyError, TypeError, ValueError) as err:
                    raise ValueError(
                        f"genotype {t} node {n} must be {{'inputs': [i, j], 'ops': [a, b]}}, got {node!r}."
                    ) from err
                if len(inputs) != 2 or len(ops) != 2:
                    raise ValueError(f"genotype {t} node {n} needs exactly two inputs and two ops, got {node!r}.")
                nodes.append(Node(inputs=inputs, ops=ops))
            cells[t] = tuple(nodes)
        genotype = cls(**cells)
        genotype.check(None, OPS)
        return genotype

    def to_json(self) -> str:
        """Readable JSON: one line per node."""
        d = self.to_dict()
        cells = ",\n".join(
            f'  "{t}": [\n' + ",\n".join(f"    {json.dumps(n)}" for n in d[t]) + "\n  ]" for t in CELL_TYPES
        )
        return f'{{\n  "space": "darts",\n{cells}\n}}'

    # -- networks and drawings ---------------------------------------------------------------------
    def network(self, options: NetworkOptions) -> nn.Module:
        """The DARTS evaluation network (``options.kind``: "cifar" or "imagenet")."""
        from unas_lightning.spaces.darts.network import DartsNetworkCIFAR, DartsNetworkImageNet

        kind = self.network_kind(options.kind)
        cls = DartsNetworkCIFAR if kind == "cifar" else DartsNetworkImageNet
        sizes = {k: v for k, v in (("channels", options.channels), ("layers", options.layers)) if v is not None}
        return cls(self, options.in_channels, options.num_classes, auxiliary=options.auxiliary, **sizes)

    def draw(self, out_dir: Path, stem: str) -> list[Path]:
        """Each cell as a PNG (paper Fig. 3) and as Graphviz DOT (PDF too when ``dot`` is installed)."""
        from unas_lightning.spaces.darts.drawing import draw_cell, write_cell_dot

        files = []
        for t in CELL_TYPES:
            files.append(draw_cell(self, t, out_dir / f"{stem}_{t}.png"))
            files += write_cell_dot(self, t, out_dir / f"{stem}_{t}.dot")
        return files
