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
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CELL_TYPES = ("normal", "reduce")


@dataclass(frozen=True)
class Node:
    """One intermediate node: ``ops[j]`` is applied to state ``inputs[j]``, the two results are summed."""

    inputs: tuple[int, int]
    ops: tuple[str, str]


@dataclass(frozen=True)
class DartsGenotype:
    """A normal and a reduction cell of the factorized DARTS space (Sec. 4.1)."""

    normal: tuple[Node, ...]
    reduce: tuple[Node, ...]

    def nodes(self, cell_type: str) -> tuple[Node, ...]:
        return self.normal if cell_type == "normal" else self.reduce

    def check(self, nodes: int, ops: Sequence[str]) -> None:
        """Raise ``ValueError`` naming the first thing that does not fit a space with ``nodes`` and ``ops``."""
        for t in CELL_TYPES:
            cell = self.nodes(t)
            if len(cell) != nodes:
                raise ValueError(f"genotype {t} cell has {len(cell)} nodes but the space has {nodes}.")
            for n, node in enumerate(cell):
                for i in node.inputs:
                    if not 0 <= i < n + 2:
                        raise ValueError(
                            f"genotype {t} node {n}: input index {i} out of range; node {n} can read states 0..{n + 1}."
                        )
                for o in node.ops:
                    if o not in ops:
                        raise ValueError(f"genotype {t} node {n}: unknown operation {o!r}; this space has {list(ops)}.")

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "space": "darts",
            **{t: [{"inputs": list(n.inputs), "ops": list(n.ops)} for n in self.nodes(t)] for t in CELL_TYPES},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DartsGenotype:
        if data.get("space", "darts") != "darts":
            raise ValueError(f"genotype is for the {data.get('space')!r} space, not the DARTS space.")
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
        return cls(**cells)

    def to_json(self) -> str:
        """Readable JSON: one line per node."""
        d = self.to_dict()
        cells = ",\n".join(
            f'  "{t}": [\n' + ",\n".join(f"    {json.dumps(n)}" for n in d[t]) + "\n  ]" for t in CELL_TYPES
        )
        return f'{{\n  "space": "darts",\n{cells}\n}}'

    @classmethod
    def from_json(cls, text: str) -> DartsGenotype:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the genotype atomically (a reader never sees a half-written file)."""
        return write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> DartsGenotype:
        return cls.from_json(Path(path).read_text())


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
