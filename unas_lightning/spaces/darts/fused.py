"""The relaxed DARTS cell as a few wide operations (horizontal fusion).

A relaxed architecture (every coefficient A_n[m, k] non-zero: zeta, softmax(phi)) runs every
candidate operation on every edge: 14 edges x 7 operations, several hundred small calls per cell,
whose Python and dispatch overhead dominates a small supernet. Operations of the same kind on
different edges differ only in their weights, so they can run as *one* call on the edges' inputs
stacked along the channels:

* a state x_m and every node n that reads it form the (n, m) *pairs* of a source group (the two cell
  inputs form the first group, each node's output the next ones, so every group has one stride);
* ReLU, batch norm (per channel) and pooling act channel-wise: one call over all pairs (pooling
  and the identity have no weights: they run once per state, not once per pair);
* an operation's depthwise convolution over all pairs: one convolution with ``groups = pairs x C``
  and the pairs' kernels stacked; its pointwise convolution: one with ``groups = pairs``; the batch
  norms of a stage: one call (inside ``batch_groups``, where each call is one per group);
* the weighted sum x_n = sum_{m,k} A_n[m, k] O_k(x_m) of every node reading the group: one batched
  matmul of the stacked outputs with a [nodes, rows] coefficient matrix (per example if need be).

This computes exactly what the edge-by-edge loop computes (same weights, the modules' own
parameters read at call time, so ``functional_call`` and DDP see nothing new; tested in float64),
in about 35 calls per source group instead of ~45 per edge. One-hot architectures keep the edge
loop, which runs only the chosen operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unas_lightning.spaces.batch_groups import batch_norm, current_groups
from unas_lightning.spaces.darts.ops import DilConv, FactorizedReduce, SepConv


@dataclass
class _ConvOp:
    """One convolutional candidate (sep or dil conv) over a group's pairs: its DilConv stages per pair."""

    k: int  # the op's index among the cell's candidates
    stages: list[list[DilConv]]  # [stage][pair]


@dataclass
class _Group:
    """The pairs (node n, input m) that read the states of one source group, and their operations.

    Operations with weights run once per pair (each edge has its own weights); pooling and the
    identity have none, so they run once per *state* and the mixture weights map them to every
    reader. Their outputs are the rows of the mixture: one row per (op, pair) or (op, state).
    """

    states: tuple[int, ...]
    readers: list[int]  # nodes reading these states, in order
    pairs: list[tuple[int, int]]  # (n, m), reader-major
    convs: list[_ConvOp] = field(default_factory=list)  # sep and dil convs (per pair)
    reduce: tuple[int, list[FactorizedReduce]] | None = None  # skip_connect at stride 2 (per pair)
    identity: list[int] = field(default_factory=list)  # op indices of skip_connect at stride 1 (per state)
    # (k, "max"/"avg", module) per state
    pools: list[tuple[int, str, nn.MaxPool2d | nn.AvgPool2d]] = field(default_factory=list)
    rows: list[tuple[int, bool]] = field(default_factory=list)  # (op index, per pair?) in stacking order
    coef_index: Tensor | None = None  # [readers, rows]: position of A_n[m, k] in the flat coefficients
    cache: dict[torch.device, Tensor] = field(default_factory=dict)  # coef_index per device


def fusable(op: nn.Module) -> bool:
    """True for the operation kinds the fused cell knows."""
    bn_ok = all(not m.affine and not m.track_running_stats for m in op.modules() if isinstance(m, nn.BatchNorm2d))
    return bn_ok and isinstance(op, (SepConv, DilConv, FactorizedReduce, nn.Identity, nn.MaxPool2d, nn.AvgPool2d))


class FusedCell:
    """Relaxed forward of a ``SearchCell`` (see the module docstring); built once, holds no weights.

    Args:
        edges: ``edges[n][m][k]``, the candidate operation k on the edge from state m to node n
            (all of kinds ``fusable`` accepts).
    """

    def __init__(self, edges: Sequence[Sequence[Sequence[nn.Module]]]):
        self.nodes = len(edges)
        self.num_ops = len(edges[0][0])
        offsets: dict[tuple[int, int], int] = {}
        pos = 0
        for n in range(self.nodes):
            for m in range(n + 2):
                offsets[n, m] = pos
                pos += self.num_ops
        self.size = pos  # length of the flat coefficient vector; index ``size`` is a constant 0
        self.groups: list[_Group] = []
        for states in [(0, 1), *[(j,) for j in range(2, self.nodes + 1)]]:
            readers = [n for n in range(self.nodes) if n + 2 > max(states)]
            pairs = [(n, m) for n in readers for m in states]
            group = _Group(states, readers, pairs)
            for k in range(self.num_ops):
                ops: list[Any] = [edges[n][m][k] for n, m in pairs]  # op k is of one kind on every edge
                first = ops[0]
                if isinstance(first, SepConv):
                    group.convs.append(_ConvOp(k, [[op[0] for op in ops], [op[1] for op in ops]]))
                elif isinstance(first, DilConv):
                    group.convs.append(_ConvOp(k, [list(ops)]))
                elif isinstance(first, FactorizedReduce):
                    group.reduce = (k, list(ops))
                elif isinstance(first, nn.Identity):
                    group.identity.append(k)
                elif isinstance(first, (nn.MaxPool2d, nn.AvgPool2d)):
                    group.pools.append((k, "max" if isinstance(first, nn.MaxPool2d) else "avg", first))
                else:
                    raise TypeError(f"FusedCell cannot fuse {type(first).__name__}.")
            per_pair = [op.k for op in group.convs] + ([group.reduce[0]] if group.reduce else [])
            per_state = group.identity + [k for k, _, _ in group.pools]
            group.rows = [(k, True) for k in per_pair] + [(k, False) for k in per_state]
            index: list[list[int]] = []
            for n in readers:  # W[n, row] = A_n[m, k] when node n reads that row's input, else 0
                row = []
                for k, one_per_pair in group.rows:
                    if one_per_pair:
                        row += [offsets[n, m] + k if pn == n else self.size for pn, m in pairs]
                    else:
                        row += [offsets[n, m] + k for m in states]
                index.append(row)
            group.coef_index = torch.tensor(index)
            self.groups.append(group)

    def __call__(self, s0: Tensor, s1: Tensor, coefs: Sequence[Tensor]) -> list[Tensor]:
        """The node outputs for coefficients ``coefs[n]`` = A_n [..., n + 2, K] (leading dim: per example)."""
        flat = torch.cat([a.flatten(-2) for a in coefs], -1)  # [..., sum_n (n + 2) K]
        flat = torch.cat([flat, flat.new_zeros(*flat.shape[:-1], 1)], -1)  # position ``size``: 0
        states: list[Tensor] = [s0, s1]
        relu: dict[int, Tensor] = {}
        acc: list[Tensor | None] = [None] * self.nodes
        for g in self.groups:
            outs = self._ops(g, states, relu)  # per row op: [B, P*C, H', W'] or [B, S*C, H', W']
            b, _, h, w = outs[0].shape
            c = states[g.states[0]].shape[1]
            # y [B, rows, H*W*C]: each output [B, R*C, H, W] is viewed as [B, R, H, W, C] (no copy when
            # channels-last) and the cat makes the one copy; then x_n = W y is one batched matmul
            y = torch.cat([o.permute(0, 2, 3, 1).reshape(b, h, w, -1, c).permute(0, 3, 1, 2, 4) for o in outs], 1)
            y = y.reshape(b, -1, h * w * c)
            weights = flat[..., self._index(g, flat.device)]  # [(B,) readers, rows]
            mixed = torch.matmul(weights, y).view(b, len(g.readers), h, w, c)
            for n, part in zip(g.readers, mixed.unbind(1), strict=True):
                part = part.permute(0, 3, 1, 2)  # [B, C, H, W], channels-last strides
                prev = acc[n]
                acc[n] = part if prev is None else prev + part
            states.append(cast(Tensor, acc[len(states) - 2]))  # the first reader has all its inputs now
        return states[2:]

    @staticmethod
    def _index(g: _Group, device: torch.device) -> Tensor:
        if device not in g.cache:
            g.cache[device] = cast(Tensor, g.coef_index).to(device)  # set in __init__
        return g.cache[device]

    # -- the candidate operations of one group, each as one wide call ------------------------------
    def _ops(self, g: _Group, states: list[Tensor], relu: dict[int, Tensor]) -> list[Tensor]:
        """Every row op's output, in ``g.rows`` order; ``relu`` caches ReLU(state) across groups."""
        pairs = len(g.pairs)
        outs: dict[int, Tensor] = {}
        if g.convs or g.reduce is not None:  # the weighted ops read ReLU(x_m), one copy per pair
            for m in g.states:
                if m not in relu:
                    relu[m] = F.relu(states[m])
            r = torch.cat([relu[m] for _, m in g.pairs], 1) if pairs > 1 else relu[g.pairs[0][1]]
            if g.convs:  # sep conv: two DilConv stages; dil conv: one
                out = self._dil_convs([r] * len(g.convs), [op.stages[0] for op in g.convs], pairs)
                seps = [i for i, op in enumerate(g.convs) if len(op.stages) == 2]
                if seps:
                    second = self._dil_convs(
                        [F.relu(out[i]) for i in seps], [g.convs[i].stages[1] for i in seps], pairs
                    )
                    for i, h in zip(seps, second, strict=True):
                        out[i] = h
                for op, h in zip(g.convs, out, strict=True):
                    outs[op.k] = h
            if g.reduce is not None:
                outs[g.reduce[0]] = self._factorized_reduce(r, g.reduce[1])
        if g.identity or g.pools:  # weight-free ops: once per state
            x = torch.cat([states[m] for m in g.states], 1) if len(g.states) > 1 else states[g.states[0]]
            for k in g.identity:
                outs[k] = x
            for k, kind, pool in g.pools:  # functional, so no one pair's module (or its hooks) runs for all
                if kind == "max":
                    outs[k] = F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding)
                else:
                    outs[k] = F.avg_pool2d(x, pool.kernel_size, pool.stride, pool.padding, count_include_pad=False)
        return [outs[k] for k, _ in g.rows]

    @staticmethod
    def _dil_convs(xs: list[Tensor], blocks: list[list[DilConv]], pairs: int) -> list[Tensor]:
        """One DilConv stage (depthwise -> pointwise -> BN) of several ops, each over all its pairs.

        ``xs[i]`` is op i's (ReLU'd) input [B, P*C], ``blocks[i]`` its DilConv of every pair. Each op's
        convolutions are one call each (one pointwise convolution over several ops' channels would be
        fewer calls, but its backward gets several times slower on CPU once the tensor outgrows the
        cache); the batch norm is one call over all ops when ``batch_groups`` splits it per group.
        """
        hs = []
        for x, block in zip(xs, blocks, strict=True):
            # a DilConv is Sequential(ReLU, depthwise Conv2d, pointwise Conv2d, BatchNorm2d)
            dw, pw = cast(nn.Conv2d, block[0][1]), cast(nn.Conv2d, block[0][2])
            w_dw = torch.cat([cast(nn.Conv2d, b[1]).weight for b in block]) if pairs > 1 else dw.weight
            w_pw = torch.cat([cast(nn.Conv2d, b[2]).weight for b in block]) if pairs > 1 else pw.weight
            h = F.conv2d(x, w_dw, None, dw.stride, dw.padding, dw.dilation, groups=x.shape[1])
            hs.append(F.conv2d(h, w_pw, None, 1, 0, 1, groups=pairs))
        eps = cast(nn.BatchNorm2d, blocks[0][0][3]).eps
        if current_groups() == 1 or len(hs) == 1:
            return [batch_norm(h, eps=eps) for h in hs]
        return list(batch_norm(torch.cat(hs, 1), eps=eps).chunk(len(hs), 1))

    @staticmethod
    def _factorized_reduce(relu: Tensor, ops: list[FactorizedReduce]) -> Tensor:
        """FactorizedReduce of every pair: two grouped strided 1x1 convs, interleaved back per pair, one BN."""
        pairs = len(ops)
        shifted = relu[:, :, 1:, 1:]
        odd_h, odd_w = relu.shape[-2] % 2, relu.shape[-1] % 2
        if odd_h or odd_w:
            shifted = F.pad(shifted, (0, odd_w, 0, odd_h))
        w1 = torch.cat([op.conv_1.weight for op in ops])
        w2 = torch.cat([op.conv_2.weight for op in ops])
        a = F.conv2d(relu, w1, None, 2, 0, 1, groups=pairs)
        b = F.conv2d(shifted, w2, None, 2, 0, 1, groups=pairs)
        n, half, h, w = a.shape
        half //= pairs
        # per pair: [conv_1 channels, conv_2 channels], as FactorizedReduce concatenates them
        y = torch.stack([a.reshape(n, pairs, half, h, w), b.reshape(n, pairs, half, h, w)], 2)
        y = y.reshape(n, pairs * 2 * half, h, w)
        return batch_norm(y, eps=ops[0].bn.eps)
