"""DARTS search space with the factorized cell (paper Sec. 4.1, Fig. 2).

Each cell has ``nodes`` intermediate nodes. Node n (0-based) reads two of the n + 2 earlier states
(the two cell inputs, then the earlier nodes) through two *input selectors* i_n, i'_n and applies
two operations chosen by two *op selectors* o_n, o'_n:

    x_n = sum_{m, k} A_n[m, k] O_{m,n}^{(k)}(x_m),     A_n = i_n (x) o_n + i'_n (x) o'_n

so every node has exactly two inputs by construction and no post-search pruning is needed.
Logits, per cell type t in {normal, reduce}:

    ``{t}_node{n}_input``: [2, n + 2]   the rows of i_n and i'_n
    ``{t}_node{n}_op``:    [2, K]       the rows of o_n and o'_n

Only the (m, k) pairs with a non-zero coefficient are computed: with one-hot rows, two operations
per node; with relaxed rows, all of them (the DARTS mixed operation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from unas_lightning.distributions import Arch
from unas_lightning.spaces.base import ArchitecturePenalty, GroupedForward, SearchSpace
from unas_lightning.spaces.batch_groups import GroupedBatchNorm2d, batch_groups, current_groups
from unas_lightning.spaces.darts.fused import FusedCell, fusable
from unas_lightning.spaces.darts.genotype import CELL_TYPES, DartsGenotype, Node
from unas_lightning.spaces.darts.network import DartsNetworkCIFAR, DartsNetworkImageNet, reduction_layers
from unas_lightning.spaces.darts.ops import OPS, FactorizedReduce, ReLUConvBN, check_ops
from unas_lightning.spaces.plan import plan
from unas_lightning.utils.held_constant import held_constant

# (m, k, coef): apply op k to state m and scale by coef (None: the coefficient is exactly 1).
Term = tuple[int, int, Tensor | None]


class Dense(list):
    """A cell's plan when every coefficient is non-zero: the A_n themselves, for the fused mixture."""


# per node, the terms to compute; or Dense([A_0, A_1, ...])
CellPlan = Sequence[Sequence[Term]] | Dense


class SearchCell(nn.Module):
    """A factorized cell holding every candidate op on every edge (m -> n)."""

    def __init__(
        self, nodes: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, ops: Sequence[str]
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0: nn.Module
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(c_pp, c, affine=False, track=False)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=False, track=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False, track=False)
        self.edges = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleList(OPS[o](c, 2 if reduction and m < 2 else 1, False, False) for o in ops)
                for m in range(n + 2)
            )
            for n in range(nodes)
        )
        edges = cast(Sequence[Sequence[Sequence[nn.Module]]], self.edges)  # ModuleLists of ModuleLists of ops
        ops_ok = all(fusable(op) for node in edges for edge in node for op in edge)
        self.fused = FusedCell(edges) if ops_ok else None  # holds references, no weights

    def forward(self, s0: Tensor, s1: Tensor, plan: CellPlan) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        if isinstance(plan, Dense):  # only handed out when every cell has a FusedCell
            return torch.cat(cast(FusedCell, self.fused)(states[0], states[1], plan), dim=1)
        for node_ops, terms in zip(cast("Sequence[nn.ModuleList]", self.edges), plan, strict=True):
            out = None
            for m, k, coef in terms:
                y = node_ops[m][k](states[m])
                if coef is not None:
                    y = y * coef
                out = y if out is None else out + y
            states.append(out)
        return torch.cat(states[2:], dim=1)


class DartsSpace(SearchSpace[DartsGenotype], GroupedForward, ArchitecturePenalty):
    """DARTS-space supernet with factorized normal and reduction cells (Sec. 4.1).

    Args:
        in_channels: image channels (1 for Fashion-MNIST/MNIST, 3 for CIFAR).
        num_classes: number of classes of the classifier.
        channels: initial number of channels C (paper: 16).
        layers: number of cells (paper: 8); reductions sit at 1/3 and 2/3 of the depth.
        nodes: intermediate nodes per cell (paper: 4).
        ops: candidate operation names, or the preset ``"paper"`` (7 ops) or ``"imagenet"`` (5 ops).
        stem_multiplier: the stem has ``stem_multiplier * channels`` channels.
        stem_stride: stride of the stem convolution; 2 quarters the cost of small CPU searches.
        stem: ``"cifar"`` (one 3x3 convolution to ``stem_multiplier * channels``) or ``"imagenet"`` (three
            stride-2 convolutions to ``channels``, as the DARTS ImageNet network and the official UNAS
            ImageNet search, whose cells start at 48 channels; ``stem_multiplier``/``stem_stride`` unused).
        channels_last: run convolutions in the channels-last memory format (about 3x faster for the
            depthwise convolutions on CPU, and the fast layout for cuDNN).
        fuse_relaxed: run a cell whose coefficients are all non-zero (relaxed zeta, softmax(phi)) as a
            few wide operations (``spaces/darts/fused.py``): the same function at a fraction of the
            per-operation overhead. ``False`` keeps the edge-by-edge loop (for comparisons).
        checkpoint_relaxed: recompute each relaxed cell's activations in the backward pass instead of
            holding them (activation checkpointing): a relaxed pass then holds the cells' outputs and one
            cell's activations at a time, for one more forward of the relaxed cells. What lets the paper's
            REBAR step (relaxed passes on the train and the val batch) fit where the DARTS first-order
            step fits; one-hot cells are not affected.

    Examples:
        >>> import torch
        >>> space = DartsSpace(in_channels=1, num_classes=10, channels=4, layers=3)
        >>> z = space.distribution().sample()
        >>> space(torch.randn(2, 1, 28, 28), z).shape
        torch.Size([2, 10])
        >>> space.genotype(z).nodes("normal")[0].ops[0] in space.ops
        True
    """

    genotype_type = DartsGenotype

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: int = 16,
        layers: int = 8,
        nodes: int = 4,
        ops: str | list[str] = "paper",
        stem_multiplier: int = 3,
        stem_stride: int = 1,
        channels_last: bool = True,
        fuse_relaxed: bool = True,
        stem: Literal["cifar", "imagenet"] = "cifar",
        checkpoint_relaxed: bool = False,
    ):
        super().__init__(in_channels, num_classes)
        for name, value in [
            ("channels", channels),
            ("layers", layers),
            ("nodes", nodes),
            ("stem_multiplier", stem_multiplier),
            ("stem_stride", stem_stride),
        ]:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DartsSpace: {name} must be a positive integer, got {value!r}.")
        if channels % 2:
            raise ValueError(f"DartsSpace: channels must be even (FactorizedReduce halves them), got {channels}.")
        self.ops = check_ops(ops)
        self.nodes, self.channels, self.layers = nodes, channels, layers
        self.stem_multiplier, self.stem_stride = stem_multiplier, stem_stride
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"DartsSpace: stem must be 'cifar' or 'imagenet', got {stem!r}.")
        self.stem_kind = stem
        k = len(self.ops)
        self.arch = nn.ParameterDict()
        for t in CELL_TYPES:
            for n in range(nodes):
                self.arch[f"{t}_node{n}_input"] = nn.Parameter(torch.zeros(2, n + 2))
                self.arch[f"{t}_node{n}_op"] = nn.Parameter(torch.zeros(2, k))

        c = channels
        if stem == "imagenet":  # s0 after two stride-2 convolutions, s1 after a third
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False),
                GroupedBatchNorm2d(c // 2, track_running_stats=False),
                nn.ReLU(),
                nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
                GroupedBatchNorm2d(c, track_running_stats=False),
            )
            self.stem1 = nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False),
                GroupedBatchNorm2d(c, track_running_stats=False),
            )
            c_pp = c_p = c
        else:
            c_pp = c_p = stem_multiplier * channels
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, c_p, 3, stride=stem_stride, padding=1, bias=False),
                GroupedBatchNorm2d(c_p, track_running_stats=False),
            )
        reductions = reduction_layers(layers)
        self.cells = nn.ModuleList()
        reduction_prev = stem == "imagenet"
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c *= 2
            self.cells.append(SearchCell(nodes, c_pp, c_p, c, reduction, reduction_prev, self.ops))
            reduction_prev = reduction
            c_pp, c_p = c_p, nodes * c
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.channels_last = channels_last
        self.fuse_relaxed = bool(fuse_relaxed)
        self.checkpoint_relaxed = bool(checkpoint_relaxed)
        self._all_cells_fuse = all(cell.fused is not None for cell in self.cells)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # -- forward -------------------------------------------------------------------------------
    def coefficients(self, arch: Mapping[str, Tensor], cell_type: str) -> list[Tensor]:
        """A_n = i_n (x) o_n + i'_n (x) o'_n for every node: [..., n + 2, K] (leading dims: batch)."""
        out = []
        for n in range(self.nodes):
            i, o = arch[f"{cell_type}_node{n}_input"], arch[f"{cell_type}_node{n}_op"]
            out.append(i[..., 0, :, None] * o[..., 0, None, :] + i[..., 1, :, None] * o[..., 1, None, :])
        return out

    def plan(self, arch: Mapping[str, Tensor]) -> dict[str, CellPlan]:
        """Which (input, op) pairs each node computes, with their coefficients (``spaces.plan``).

        A cell type whose coefficients are all non-zero gets ``Dense(A_n)``: the fused mixture
        (``fuse_relaxed``).
        """
        coefs = {t: self.coefficients(arch, t) for t in CELL_TYPES}
        mixtures = iter(plan([a.reshape(*a.shape[:-2], -1) for t in CELL_TYPES for a in coefs[t]]))
        plans: dict[str, CellPlan] = {}
        k = len(self.ops)
        for t in CELL_TYPES:
            cell = [next(mixtures) for _ in coefs[t]]
            if self.fuse_relaxed and self._all_cells_fuse and all(m.dense for m in cell):
                plans[t] = Dense(coefs[t])
            else:
                plans[t] = [[(*divmod(j, k), c) for j, c in m.terms] for m in cell]
        return plans

    def forward(self, x: Tensor, arch: Mapping[str, Tensor]) -> Tensor:
        """Logits of the network selected (one-hot rows) or mixed (relaxed rows) by ``arch``.

        Rows may carry a leading batch dimension [B, ...] for per-example architectures.
        """
        plans = self.plan(arch)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        s0 = s1 = self.stem(x)
        if self.stem_kind == "imagenet":
            s1 = self.stem1(s0)
        for cell in cast("Sequence[SearchCell]", self.cells):
            cell_plan = plans["reduce" if cell.reduction else "normal"]
            if self.checkpoint_relaxed and torch.is_grad_enabled() and _relaxed(cell_plan):
                s0, s1 = s1, _checkpointed(cell, s0, s1, cell_plan)
            else:
                s0, s1 = s1, cell(s0, s1, cell_plan)
        return self.classifier(self.pool(s1).flatten(1))

    def architecture_penalty(self, arch: Mapping[str, Tensor]) -> Tensor:
        """The official UNAS code's ``alpha_loss``: for every node of both cell types, how much its two edges
        choose the same input *and* the same operation, (sum_m i_m i'_m) (sum_k o_k o'_k): 1 for a one-hot
        node whose two edges coincide, 0 when they differ; summed over nodes and cell types."""
        total: Tensor | int = 0
        for t in CELL_TYPES:
            for n in range(self.nodes):
                i, o = arch[f"{t}_node{n}_input"], arch[f"{t}_node{n}_op"]
                total = total + (i[..., 0, :] * i[..., 1, :]).sum(-1) * (o[..., 0, :] * o[..., 1, :]).sum(-1)
        return cast(Tensor, total)  # a tensor: a cell has at least one node

    # -- genotypes -----------------------------------------------------------------------------
    def category_names(self, key: str) -> list[str]:
        """The columns of the logits ``key``: candidate inputs (cell inputs, earlier nodes) or operations."""
        if key.endswith("_op"):
            return list(self.ops)
        n = int(key.split("_node")[1].split("_")[0])
        return ["c_{k-2}", "c_{k-1}", *(f"node{m}" for m in range(n))]

    def genotype(self, arch: Mapping[str, Tensor] | None = None) -> DartsGenotype:
        """Genotype of ``arch`` (default: the most probable architecture, row-wise argmax of phi)."""
        arch = cast(Mapping[str, Tensor], self.arch) if arch is None else arch
        cells = {}
        for t in CELL_TYPES:
            nodes = []
            for n in range(self.nodes):
                i = arch[f"{t}_node{n}_input"].detach().argmax(-1).tolist()
                o = arch[f"{t}_node{n}_op"].detach().argmax(-1).tolist()
                nodes.append(Node(inputs=(i[0], i[1]), ops=(self.ops[o[0]], self.ops[o[1]])))
            cells[t] = tuple(nodes)
        return DartsGenotype(normal=cells["normal"], reduce=cells["reduce"])

    def arch_of(self, genotype: DartsGenotype) -> Arch:
        """One-hot architecture of a genotype; raises ``ValueError`` if it does not fit this space."""
        self.check_genotype(genotype)
        genotype.check(self.nodes, self.ops)
        arch: Arch = {}
        for t in CELL_TYPES:
            for n, node in enumerate(genotype.nodes(t)):
                idx_in = torch.tensor(node.inputs)
                idx_op = torch.tensor([self.ops.index(o) for o in node.ops])
                arch[f"{t}_node{n}_input"] = nn.functional.one_hot(idx_in, n + 2).float()
                arch[f"{t}_node{n}_op"] = nn.functional.one_hot(idx_op, len(self.ops)).float()
        return arch

    def derived_network(self, genotype: DartsGenotype | None = None) -> nn.Module:
        """The evaluation network of ``genotype`` (default: the most probable) at the search's scale.

        The supernet's channels, cells and stem, without the auxiliary head: what hardware costs
        measure and summaries report. Its weights are fresh (the supernet's batch norms are not affine).
        """
        genotype = self.genotype() if genotype is None else genotype
        self.check_genotype(genotype)
        genotype.check(self.nodes, self.ops)
        sizes = (self.in_channels, self.num_classes, self.channels, self.layers)
        net: nn.Module
        if self.stem_kind == "imagenet":
            net = DartsNetworkImageNet(genotype, *sizes, auxiliary=False)
        else:
            net = DartsNetworkCIFAR(
                genotype, *sizes, auxiliary=False, stem_multiplier=self.stem_multiplier, stem_stride=self.stem_stride
            )
        return net.to(self.classifier.weight.device)


def _relaxed(plan: CellPlan) -> bool:
    """Whether a cell's plan mixes operations (some node computes more than its two chosen terms)."""
    return isinstance(plan, Dense) or any(len(terms) > 2 for terms in plan)


def _checkpointed(cell: SearchCell, s0: Tensor, s1: Tensor, plan: CellPlan) -> Tensor:
    """``cell(s0, s1, plan)`` whose activations are recomputed in backward (``checkpoint_relaxed``).

    Inside ``batch_groups(g)`` each of the g groups is its own checkpoint (the groups are independent
    evaluations: their concatenation is the grouped pass), so the backward recomputes one group's
    activations at a time. The recomputation runs outside the caller's context, so it re-enters what
    the forward saw: which weights were held constant (the phi-step holds w constant; recomputing with w
    trainable would build another graph and give w gradients).
    """
    groups = current_groups()
    constant = [p for p in cell.parameters() if not p.requires_grad]

    def run(s0: Tensor, s1: Tensor, plan: CellPlan) -> Tensor:
        with batch_groups(1), held_constant(constant):
            return cell(s0, s1, plan)

    n = s0.shape[0] // groups
    outs = [
        checkpoint(
            run,
            s0[i * n : (i + 1) * n],
            s1[i * n : (i + 1) * n],
            _rows(plan, i * n, (i + 1) * n),
            use_reentrant=False,
            preserve_rng_state=False,
        )
        for i in range(groups)
    ]
    return outs[0] if groups == 1 else torch.cat(outs)


def _rows(plan: CellPlan, start: int, stop: int) -> CellPlan:
    """The plan of examples start..stop: per-example coefficients ([B, n + 2, K] in a ``Dense`` plan,
    [B, 1, 1, 1] in a term list) sliced, shared ones kept."""
    if isinstance(plan, Dense):
        return Dense(a[start:stop] if a.dim() == 3 else a for a in plan)
    return [[(m, k, c[start:stop] if c is not None and c.dim() == 4 else c) for m, k, c in terms] for terms in plan]
