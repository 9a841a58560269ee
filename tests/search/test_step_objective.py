"""StepObjective: one grouped supernet pass computes what separate passes compute (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from unas_lightning.distributions import ArchDistribution
from unas_lightning.search.step_objective import StepObjective
from unas_lightning.spaces import DartsSpace


def _setup(per_example: bool, seed: int = 0):
    torch.manual_seed(seed)
    space = DartsSpace(channels=4, layers=3)
    batch = {"train": (torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))),
             "val": (torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,)))}  # fmt: skip
    phi = {k: (0.5 * torch.randn_like(v)).requires_grad_(True) for k, v in space.arch.items()}
    logits = {k: v.expand(6, *v.shape) for k, v in phi.items()} if per_example else phi
    dist = ArchDistribution(logits)
    s = dist.rsample(0.5)
    zeta_tilde = dist.conditional_rsample(s.z, 0.5)
    return space, batch, phi, s, zeta_tilde


@pytest.mark.parametrize("per_example", [False, True], ids=["shared", "per-example"])
@pytest.mark.parametrize("objective", ["gen", "val"])
def test_one_grouped_pass_equals_separate_passes(per_example, objective):
    space, batch, phi, s, zeta_tilde = _setup(per_example)
    grouped = StepObjective(space, batch, objective, 0.5, examples=6)
    separate = StepObjective(space, batch, objective, 0.5, examples=6)
    separate.grouped = False
    assert grouped.grouped  # DartsSpace supports batch_groups
    got = grouped.many([s.zeta, zeta_tilde])
    want = separate.many([s.zeta, zeta_tilde])
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape == ((6,) if per_example else ())
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    g_got = torch.autograd.grad(sum(v.sum() for v in got), list(phi.values()), retain_graph=True)
    g_want = torch.autograd.grad(sum(v.sum() for v in want), list(phi.values()))
    scale = max(g.abs().max() for g in g_want)  # float32 sums in another order: compare at the gradient's scale
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(scale))
    # one-hot z on both batches in one pass, too
    torch.testing.assert_close(grouped(s.z), separate(s.z), rtol=1e-4, atol=1e-5)


def test_grouped_pass_is_one_supernet_call():
    space, batch, _, s, zeta_tilde = _setup(False)
    calls = []
    handle = space.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    StepObjective(space, batch, "gen", 0.5, examples=6).many([s.zeta, zeta_tilde])
    handle.remove()
    assert calls == [24]  # 2 architectures x (train, val) x 6 examples


def test_several_one_hot_architectures_get_a_pass_each():
    """Sharing a pass would run every architecture's operations on every group: one pass per z instead."""
    space, batch, phi, _, _ = _setup(False)
    dist = ArchDistribution(phi)
    z1, z2 = dist.sample(), dist.sample()
    calls = []
    handle = space.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    objective = StepObjective(space, batch, "gen", 0.5, examples=6)
    values = objective.many([z1, z2])
    handle.remove()
    assert calls == [12, 12]  # each z over (train, val) x 6 examples
    torch.testing.assert_close(torch.stack(values), torch.stack([objective(z1), objective(z2)]))


def test_weights_are_held_constant():
    """Only phi gets a gradient; w builds no graph and requires gradients again afterwards."""
    space, batch, phi, s, zeta_tilde = _setup(False)
    values = StepObjective(space, batch, "gen", 0.5, examples=6).many([s.zeta, zeta_tilde])
    sum(values).backward()
    assert all(p.grad is None and p.requires_grad for p in space.weight_parameters())
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in phi.values())


def test_gen_gap_per_example_pair_or_between_batch_means():
    """With one shared architecture, L_gen's gap is |mean L_val - mean L_train| ("batch") or the mean of
    |L_val,b - L_train,b| ("example", the official code); per-example architectures always pair examples."""
    import torch.nn.functional as F

    from unas_lightning.search.objectives import generalization_loss

    space, batch, _, s, _ = _setup(False)
    with torch.no_grad():
        lt = F.cross_entropy(space(batch["train"][0], s.z), batch["train"][1], reduction="none")
        lv = F.cross_entropy(space(batch["val"][0], s.z), batch["val"][1], reduction="none")
        by_batch = StepObjective(space, batch, "gen", 0.5, examples=6)(s.z)
        by_example = StepObjective(space, batch, "gen", 0.5, examples=6, gen_gap="example")(s.z)
    torch.testing.assert_close(by_batch, generalization_loss(lt.mean(), lv.mean(), 0.5), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(by_example, generalization_loss(lt, lv, 0.5).mean(), rtol=1e-5, atol=1e-6)
    assert by_example > by_batch  # |mean| <= mean |.|, strictly on random data
    with pytest.raises(ValueError, match="gen_gap must be one of"):
        StepObjective(space, batch, "gen", 0.5, examples=6, gen_gap="pairs")
