"""The factorized DARTS supernet: docs/contracts.md, section 1, layout, shapes, sparse execution and genotypes."""

from __future__ import annotations

import json

import pytest
import torch

from unas_lightning.spaces import DartsGenotype, DartsSpace
from unas_lightning.spaces.darts import IMAGENET_PRIMITIVES, PRIMITIVES


def small_space(**kw) -> DartsSpace:
    kw = {"in_channels": 1, "num_classes": 10, "channels": 4, "layers": 3, **kw}
    return DartsSpace(**kw)


def test_logits_layout_follows_contract_1():
    space = small_space()
    k = len(PRIMITIVES)
    assert len(space.arch) == 2 * 4 * 2
    for t in ("normal", "reduce"):
        for n in range(4):
            assert space.arch[f"{t}_node{n}_input"].shape == (2, n + 2)
            assert space.arch[f"{t}_node{n}_op"].shape == (2, k)
    assert {id(p) for p in space.arch_parameters()}.isdisjoint({id(p) for p in space.weight_parameters()})
    assert DartsSpace(channels=4, layers=3, ops="imagenet").ops == IMAGENET_PRIMITIVES


@pytest.mark.parametrize(("c", "size"), [(1, 28), (3, 32)])
def test_forward_shapes_for_one_hot_and_relaxed(c, size):
    torch.manual_seed(0)
    space = small_space(in_channels=c)
    x = torch.randn(2, c, size, size)
    s = space.distribution().rsample(0.5)
    assert space(x, s.z).shape == (2, 10)
    out = space(x, s.zeta)
    out.sum().backward()
    assert all(p.grad is not None for p in space.arch_parameters())


def _count_op_calls(space: DartsSpace):
    calls = []
    for ci, cell in enumerate(space.cells):
        for n, node in enumerate(cell.edges):
            for m, ops in enumerate(node):
                for k, op in enumerate(ops):
                    op.register_forward_hook(lambda *_, key=(ci, n, m, k): calls.append(key))
    return calls


def test_one_hot_rows_run_only_the_chosen_operations():
    torch.manual_seed(1)
    space = small_space()
    calls = _count_op_calls(space)
    z = space.distribution().sample()
    genotype = space.genotype(z)
    space(torch.randn(2, 1, 28, 28), z)
    expected = set()
    for ci, cell in enumerate(space.cells):
        for n, node in enumerate(genotype.nodes("reduce" if cell.reduction else "normal")):
            for m, op in zip(node.inputs, node.ops, strict=True):
                expected.add((ci, n, m, space.ops.index(op)))
    assert set(calls) == expected
    assert len(calls) == len(expected) <= 2 * 4 * len(space.cells)

    calls.clear()
    zeta = space.distribution().rsample(1.0).zeta
    space(torch.randn(2, 1, 28, 28), zeta)
    assert calls == []  # relaxed rows run fused (tests/spaces/test_darts_fused.py), not op by op
    space.fuse_relaxed = False
    space(torch.randn(2, 1, 28, 28), zeta)
    total = sum(len(ops) for cell in space.cells for node in cell.edges for ops in node)
    assert len(calls) == total  # relaxed rows mix every candidate


def test_one_hot_forward_equals_the_mixture_at_one_hot_weights():
    """With one-hot rows given as relaxed (grad-requiring) weights the output is the same network."""
    torch.manual_seed(2)
    space = small_space().eval()
    z = space.distribution().sample()
    x = torch.randn(4, 1, 28, 28)
    relaxed = {k: v.clone().requires_grad_(True) for k, v in z.items()}
    assert torch.allclose(space(x, z), space(x, relaxed), atol=1e-5)


def test_genotype_is_the_row_wise_argmax_and_round_trips_through_json(tmp_path):
    torch.manual_seed(3)
    space = small_space()
    with torch.no_grad():
        for p in space.arch_parameters():
            p.normal_()
    genotype = space.genotype()
    for t in ("normal", "reduce"):
        for n, node in enumerate(genotype.nodes(t)):
            assert list(node.inputs) == space.arch[f"{t}_node{n}_input"].argmax(-1).tolist()
            assert [space.ops.index(o) for o in node.ops] == space.arch[f"{t}_node{n}_op"].argmax(-1).tolist()
            assert len(node.inputs) == 2  # exactly two inputs per node, no post-search pruning
    path = genotype.save(tmp_path / "g.json")
    loaded = DartsGenotype.load(path)
    assert loaded == genotype
    assert json.loads(path.read_text())["space"] == "darts"
    arch = space.arch_of(loaded)
    assert space.genotype(arch) == genotype


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["normal"][0].update(ops=["conv_9x9", "skip_connect"]), "unknown operation 'conv_9x9'"),
        (lambda d: d["normal"].pop(), "has 3 nodes but the space has 4"),
        (lambda d: d["reduce"][1].update(inputs=[0, 3]), "input index 3 out of range"),
        (lambda d: d["reduce"][1].update(inputs=[0]), "exactly two inputs"),
        (lambda d: d.pop("reduce"), "no 'reduce' cell"),
        (lambda d: d.update(space="proxyless"), "not the DARTS space"),
    ],
)
def test_malformed_genotypes_are_rejected_with_a_clear_message(mutate, message):
    space = small_space()
    data = space.genotype().to_dict()
    mutate(data)
    with pytest.raises(ValueError, match=message):
        space.arch_of(DartsGenotype.from_dict(data))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ops": ["skip_connect", "nope"]}, "unknown operation"),
        ({"ops": "cifar"}, "unknown op preset"),
        ({"channels": 5}, "channels must be even"),
        ({"layers": 0}, "layers must be a positive integer"),
    ],
)
def test_bad_space_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_space(**kwargs)
