"""The fused relaxed cell computes exactly what the edge-by-edge mixture computes."""

from __future__ import annotations

import copy

import pytest
import torch

from unas_lightning.distributions import ArchDistribution
from unas_lightning.spaces import DartsSpace
from unas_lightning.spaces.batch_groups import batch_groups

CUSTOM_OPS = ["skip_connect", "dil_conv_5x5", "max_pool_3x3", "sep_conv_3x3", "avg_pool_3x3"]


def _pair(ops, size: int):
    torch.manual_seed(0)
    in_channels = 1 if size == 28 else 3
    # float64: the two orders of summation agree to ~1e-14, so a real difference cannot hide in float32 noise
    fused = DartsSpace(in_channels=in_channels, channels=4, layers=3, ops=ops, stem_stride=2).double()
    with torch.no_grad():
        for p in fused.arch.values():
            p.normal_()
    loop = copy.deepcopy(fused)
    loop.fuse_relaxed = False
    return fused, loop, torch.randn(6, in_channels, size, size, dtype=torch.float64)


def _relaxed(space, per_example: bool, n: int):
    logits = {k: v.expand(n, *v.shape) if per_example else v for k, v in space.arch.items()}
    torch.manual_seed(1)
    return ArchDistribution(logits).rsample(0.5).zeta


@pytest.mark.parametrize("ops", ["paper", "imagenet", CUSTOM_OPS], ids=["paper", "imagenet", "custom"])
@pytest.mark.parametrize(("per_example", "groups"), [(False, 1), (True, 1), (False, 2), (True, 3)])
def test_fused_cell_equals_the_edge_loop(ops, per_example, groups):
    """Values and gradients (phi and w) agree; 28x28 with a stride-2 stem reaches odd sizes (7x7)."""
    fused, loop, x = _pair(ops, 28 if ops != "imagenet" else 32)
    with batch_groups(groups):
        out_f = fused(x, _relaxed(fused, per_example, len(x)))
        out_l = loop(x, _relaxed(loop, per_example, len(x)))
    torch.testing.assert_close(out_f, out_l, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(out_f)
    grads_f = torch.autograd.grad((out_f * weights).sum(), list(fused.parameters()), allow_unused=True)
    grads_l = torch.autograd.grad((out_l * weights).sum(), list(loop.parameters()), allow_unused=True)
    for (name, _), a, b in zip(fused.named_parameters(), grads_f, grads_l, strict=True):
        assert (a is None) == (b is None), name
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * float(b.abs().max()) + 1e-14, msg=name)


def test_only_fully_relaxed_cell_types_are_fused():
    """A cell type with one exactly-zero coefficient runs the edge loop (only its non-zero terms)."""
    fused, loop, x = _pair("paper", 28)
    zeta = dict(_relaxed(fused, False, len(x)))
    zeta["reduce_node0_op"] = torch.nn.functional.one_hot(torch.tensor([1, 2]), len(fused.ops)).double()
    plan = fused.plan(zeta)
    assert isinstance(plan["normal"], list) and type(plan["normal"]).__name__ == "Dense"
    assert type(plan["reduce"]).__name__ != "Dense"
    torch.testing.assert_close(fused(x, zeta), loop(x, zeta), rtol=1e-10, atol=1e-12)


def test_a_deep_copy_fuses_its_own_weights():
    """The fused cell refers to the op modules; a copied space must use the copy's, not the original's."""
    fused, _, x = _pair("paper", 28)
    twin = copy.deepcopy(fused)
    with torch.no_grad():
        for p in twin.weight_parameters():
            p.add_(0.1 * torch.randn_like(p))
    zeta = _relaxed(twin, False, len(x))
    loop = copy.deepcopy(twin)
    loop.fuse_relaxed = False
    torch.testing.assert_close(twin(x, zeta), loop(x, zeta), rtol=1e-10, atol=1e-12)
    assert not torch.allclose(twin(x, zeta), fused(x, zeta))


@pytest.mark.slow
@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("fuse", [True, False])
def test_checkpointed_relaxed_cells_give_the_same_values_and_gradients(fuse, per_example):
    """checkpoint_relaxed recomputes in backward what the forward saw: batch groups and constant weights."""
    from unas_lightning.utils.held_constant import held_constant

    torch.manual_seed(0)
    plain = DartsSpace(in_channels=1, num_classes=10, channels=4, layers=3, fuse_relaxed=fuse).double()
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint_relaxed = True
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)  # small: float64 convolutions are slow on CPU
    rows = (6,) if per_example else ()  # per-example rows: each checkpointed group slices its own
    dist = ArchDistribution({k: v.detach().expand(*rows, *v.shape) for k, v in plain.arch.items()})
    zeta = {k: v.double().requires_grad_(True) for k, v in dist.rsample(0.4).zeta.items()}
    z = dist.sample()

    def phi_step(space):  # w held constant, three groups: the relaxed phi gradient only
        with batch_groups(3), held_constant(space.weight_parameters()):
            out = space(x, zeta)
        grads = torch.autograd.grad(out.square().sum(), list(zeta.values()))
        assert all(p.grad is None for p in space.weight_parameters())
        return out, grads

    out_a, g_a = phi_step(plain)
    out_b, g_b = phi_step(ckpt)
    torch.testing.assert_close(out_a, out_b, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_a, g_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    for space in (plain, ckpt):  # w-step on the relaxed sample: the same gradients for w
        space(x, {k: v.detach() for k, v in zeta.items()}).square().sum().backward()
    for a, b in zip(plain.weight_parameters(), ckpt.weight_parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(plain(x, z), ckpt(x, z))  # one-hot cells are not checkpointed
