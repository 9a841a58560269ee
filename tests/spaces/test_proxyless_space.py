"""ProxylessNAS MBConv space: layout, one-hot/relaxed forward, derived network, genotypes."""

from __future__ import annotations

import pytest
import torch

from unas_lightning.spaces import ProxylessBackbone, ProxylessGenotype, ProxylessNet, ProxylessSpace
from unas_lightning.spaces.proxyless import MBCONV_OPS, PROXYLESS_OPS


def small_space(**kw) -> ProxylessSpace:
    return ProxylessSpace(in_channels=1, num_classes=10, width_mult=0.25, stem_stride=1, **kw)


def test_layout_is_the_21_layer_imagenet_chain():
    space = ProxylessSpace()
    assert len(space.arch) == 21
    sizes = [v.shape[-1] for v in space.arch.values()]
    firsts = {0, 4, 8, 12, 16, 20}  # the first layer of each stage changes shape: no skip
    assert sizes == [6 if i in firsts else 7 for i in range(21)]
    assert space.choices[1] == PROXYLESS_OPS and space.choices[0] == MBCONV_OPS
    assert space.backbone.widths == (24, 40, 80, 96, 192, 320)


@pytest.mark.parametrize("train", [False, True])
def test_derived_network_equals_the_supernet_one_hot_forward(train):
    torch.manual_seed(0)
    space = small_space()
    space.train(train)
    x = torch.randn(4, 1, 28, 28)
    z = space.distribution().sample()
    z["layer01"] = torch.nn.functional.one_hot(torch.tensor(6), 7).float()  # make sure one layer is skipped
    genotype = space.genotype(z)
    net = space.derived_network(genotype, copy_weights=True).train(train)
    assert len(net.blocks) == genotype.depth() < 21
    assert not any(n.startswith("arch") for n, _ in net.named_parameters())
    torch.testing.assert_close(net(x), space(x, z))


def test_relaxed_rows_mix_every_candidate_and_reach_phi():
    space = small_space()
    x = torch.randn(2, 1, 28, 28)
    relaxed = {k: torch.softmax(v, -1) for k, v in space.arch.items()}
    space(x, relaxed).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in space.arch_parameters())
    used = [p.grad is not None for p in space.layers[3].candidates.parameters()]
    assert all(used)


def test_per_example_rows_reproduce_the_shared_network():
    torch.manual_seed(1)
    space = small_space().eval()
    x = torch.randn(3, 1, 28, 28)
    z = space.distribution().sample()
    batched = {k: v.expand(3, *v.shape) for k, v in z.items()}
    torch.testing.assert_close(space(x, batched), space(x, z))


def test_genotype_round_trips_through_json(tmp_path):
    space = small_space()
    z = space.distribution().sample()
    genotype = space.genotype(z)
    path = genotype.save(tmp_path / "genotype.json")
    loaded = ProxylessGenotype.load(path)
    assert loaded == genotype
    assert all(torch.equal(space.arch_of(loaded)[k], z[k]) for k in z)
    net = ProxylessNet(loaded, in_channels=1, num_classes=10)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "ops, message",
    [
        (["skip"] + ["3x3_MBConv3"] * 20, "cannot be skipped"),
        (["3x3_MBConv3"] * 20, "has 20 layers"),
        (["3x3_MBConv3"] * 20 + ["9x9_MBConv2"], "not allowed"),
    ],
)
def test_genotypes_that_do_not_fit_are_rejected(ops, message):
    with pytest.raises(ValueError, match=message):
        ProxylessSpace().arch_of(ProxylessGenotype(tuple(ops)))
    with pytest.raises(ValueError, match=message):
        ProxylessGenotype.from_dict({"space": "proxyless", "ops": ops})


def test_bad_backbones_and_widths_are_rejected():
    with pytest.raises(ValueError, match="one entry per stage"):
        ProxylessBackbone(widths=(8, 16), depths=(1,), strides=(2, 2))
    with pytest.raises(ValueError, match="width_mult"):
        ProxylessSpace(width_mult=0)
    with pytest.raises(ValueError, match="not the ProxylessNAS space"):
        ProxylessGenotype.from_dict({"space": "darts", "ops": []})
