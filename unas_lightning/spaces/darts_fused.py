"""The relaxed DARTS cell as a few wide operations (horizontal fusion).

A relaxed architecture (every coefficient A_n[m, k] non-zero: zeta, softmax(phi)) runs every
candidate operation on every edge: 14 edges x 7 operations, several hundred small calls per cell,
whose Python and dispatch overhead dominates a small supernet. Operations of the same kind on
different edges differ only in their weights, so they can run as *one* call on the edges' inputs
stacked along the channels:

* a state x_m and every node n that reads it form the (n, m) *pairs* of a source group (the two cell
  inputs form the first group, each node's output the next ones, so every group has one stride);
* ReLU, batch norm (per channel) and pooling act channel-wise: one call over all pairs;
* the depthwise convolutions of one kernel shape: one convolution with ``groups = pairs x C`` and the
  pairs' kernels stacked; all pointwise convolutions of a stage: one grouped convolution;
* the weighted sum x_n = sum_{m,k} A_n[m, k] O_k(x_m) of every node reading the group: one einsum.

This computes exactly what the edge-by-edge loop computes (same weights, the modules' own
parameters read at call time, so ``functional_call`` and DDP see nothing new), in about 40 calls per
source group instead of ~45 per edge. One-hot architectures keep the edge loop, which runs only the
chosen operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unas_lightning.spaces.batch_groups import batch_norm
from unas_lightning.spaces.darts_ops import DilConv, FactorizedReduce, SepConv


@dataclass
class _ConvOp:
    """One convolutional candidate (sep or dil conv) over a group's pairs: its DilConv stages per pair."""

    k: int  # the op's index among the cell's candidates
    stages: list[list[DilConv]]  # [stage][pair]


@dataclass
class _Group:
    """The pairs (node n, input m) that read the states of one source group, and their operations."""

    states: tuple[int, ...]
    readers: list[int]  # nodes reading these states, in order
    pairs: list[tuple[int, int]]  # (n, m), reader-major
    convs: list[_ConvOp] = field(default_factory=list)  # sep convs first, then dil convs
    identity: list[int] = field(default_factory=list)  # op indices of skip_connect (stride 1)
    reduce: tuple[int, list[FactorizedReduce]] | None = None  # skip_connect at stride 2
    pools: list[tuple[int, str, nn.Module]] = field(default_factory=list)  # (k, "max"/"avg", module)
    coef_index: Tensor | None = None  # positions of A[n, m, k] in the cell's flat coefficient vector
    coef_mask: Tensor | None = None  # [readers, K, pairs]: 1 where the pair belongs to the node
    cache_key: tuple | None = None
    cache: tuple[Tensor, Tensor] | None = None


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
        offsets, pos = {}, 0
        for n in range(self.nodes):
            for m in range(n + 2):
                offsets[n, m] = pos
                pos += self.num_ops
        self.groups: list[_Group] = []
        for states in [(0, 1), *[(j,) for j in range(2, self.nodes + 1)]]:
            readers = [n for n in range(self.nodes) if n + 2 > max(states)]
            pairs = [(n, m) for n in readers for m in states]
            group = _Group(states, readers, pairs)
            seps, dils = [], []
            for k in range(self.num_ops):
                ops = [edges[n][m][k] for n, m in pairs]
                first = ops[0]
                if isinstance(first, SepConv):
                    seps.append(_ConvOp(k, [[op[0] for op in ops], [op[1] for op in ops]]))
                elif isinstance(first, DilConv):
                    dils.append(_ConvOp(k, [list(ops)]))
                elif isinstance(first, FactorizedReduce):
                    group.reduce = (k, list(ops))
                elif isinstance(first, nn.Identity):
                    group.identity.append(k)
                elif isinstance(first, (nn.MaxPool2d, nn.AvgPool2d)):
                    group.pools.append((k, "max" if isinstance(first, nn.MaxPool2d) else "avg", first))
                else:
                    raise TypeError(f"FusedCell cannot fuse {type(first).__name__}.")
            group.convs = seps + dils
            index = [offsets[n, m] + k for k in range(self.num_ops) for n, m in pairs]  # k-major, then pair
            group.coef_index = torch.tensor(index)
            mask = torch.zeros(len(readers), self.num_ops, len(pairs))
            for p, (n, _) in enumerate(pairs):
                mask[readers.index(n), :, p] = 1
            group.coef_mask = mask
            self.groups.append(group)

    def __call__(self, s0: Tensor, s1: Tensor, coefs: Sequence[Tensor]) -> list[Tensor]:
        """The node outputs for coefficients ``coefs[n]`` = A_n [..., n + 2, K] (leading dim: per example)."""
        flat = torch.cat([a.flatten(-2) for a in coefs], -1)  # [..., sum_n (n + 2) K]
        states, acc = [s0, s1], [None] * self.nodes
        for g in self.groups:
            x = torch.cat([states[m] for _, m in g.pairs], 1) if len(g.pairs) > 1 else states[g.pairs[0][1]]
            outs = self._ops(g, x)  # K x [B, P*C, H', W']
            b, _, h, w = outs[0].shape
            c = x.shape[1] // len(g.pairs)
            # y [B, K*P, H*W*C]: each output [B, P*C, H, W] is viewed as [B, P, H, W, C] (no copy when
            # channels-last) and the stack makes the one copy; then x_n = A y is one batched matmul
            y = torch.stack([o.permute(0, 2, 3, 1).reshape(b, h, w, -1, c).permute(0, 3, 1, 2, 4) for o in outs], 1)
            y = y.view(b, -1, h * w * c)
            index, mask = self._constants(g, flat)
            weights = flat.index_select(-1, index).unflatten(-1, (self.num_ops, len(g.pairs)))
            weights = (weights.unsqueeze(-3) * mask).flatten(-2)  # [(B,) N, K*P]
            mixed = torch.matmul(weights, y).view(b, len(g.readers), h, w, c)
            for n, part in zip(g.readers, mixed.unbind(1), strict=True):
                part = part.permute(0, 3, 1, 2)  # [B, C, H, W], channels-last strides
                acc[n] = part if acc[n] is None else acc[n] + part
            states.append(acc[len(states) - 2])  # the first reader has all its inputs now
        return states[2:]

    def _constants(self, g: _Group, like: Tensor) -> tuple[Tensor, Tensor]:
        """The group's coefficient index and mask on ``like``'s device (moved once per device and dtype)."""
        key = (like.device, like.dtype)
        if g.cache_key != key:
            g.cache = (g.coef_index.to(like.device), g.coef_mask.to(like.device, like.dtype))
            g.cache_key = key
        return g.cache

    # -- the candidate operations of one group, each as one wide call ------------------------------
    def _ops(self, g: _Group, x: Tensor) -> list[Tensor]:
        pairs = len(g.pairs)
        outs: list[Tensor | None] = [None] * self.num_ops
        relu = F.relu(x)
        if g.convs:
            first = self._stage(relu, [op.stages[0] for op in g.convs], pairs, shared=True)
            chunks = first.chunk(len(g.convs), 1)
            seps = [op for op in g.convs if len(op.stages) == 2]
            for op, chunk in zip(g.convs[len(seps) :], chunks[len(seps) :], strict=True):
                outs[op.k] = chunk
            if seps:
                second_in = F.relu(torch.cat(chunks[: len(seps)], 1) if len(seps) > 1 else chunks[0])
                second = self._stage(second_in, [op.stages[1] for op in seps], pairs, shared=False)
                for op, chunk in zip(seps, second.chunk(len(seps), 1), strict=True):
                    outs[op.k] = chunk
        for k in g.identity:
            outs[k] = x
        if g.reduce is not None:
            outs[g.reduce[0]] = self._factorized_reduce(relu, g.reduce[1])
        for k, kind, pool in g.pools:
            if kind == "max":
                outs[k] = F.max_pool2d(x, pool.kernel_size, pool.stride, pool.padding)
            else:
                outs[k] = F.avg_pool2d(x, pool.kernel_size, pool.stride, pool.padding, count_include_pad=False)
        return outs  # type: ignore[return-value]

    @staticmethod
    def _stage(x: Tensor, blocks: list[list[DilConv]], pairs: int, shared: bool) -> Tensor:
        """One DilConv stage of several ops over all pairs: depthwise per op, one grouped pointwise, one BN.

        ``x`` is the pairs' (ReLU'd) inputs [B, P*C], read by every op (``shared``), or one such slab
        per op concatenated [B, ops*P*C] (the second stage of the separable convolutions).
        """
        inputs = [x] * len(blocks) if shared else list(x.chunk(len(blocks), 1))
        depthwise = []
        for block, inp in zip(blocks, inputs, strict=True):
            dw = block[0][1]
            weight = torch.cat([b[1].weight for b in block]) if len(block) > 1 else dw.weight
            depthwise.append(F.conv2d(inp, weight, None, dw.stride, dw.padding, dw.dilation, groups=inp.shape[1]))
        h = torch.cat(depthwise, 1) if len(depthwise) > 1 else depthwise[0]
        pw_weight = torch.cat([b[2].weight for block in blocks for b in block])
        h = F.conv2d(h, pw_weight, None, 1, 0, 1, groups=len(blocks) * pairs)
        return batch_norm(h, eps=blocks[0][0][3].eps)

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
