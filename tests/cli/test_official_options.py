"""The official UNAS code's settings as named options: alpha_loss, soften_eps, the restart after the warm-up,
search-batch augmentation (L_gen's per-example gap and the coupled zeta~ are tested with the objective and
the estimators)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_data, tiny_trainer

from unas_lightning import SearchModule
from unas_lightning.estimators import Reinforce
from unas_lightning.search.step_objective import StepObjective
from unas_lightning.spaces import DartsSpace


def _one_hot(idx, k):
    return torch.nn.functional.one_hot(torch.tensor(idx), k).float()


def test_darts_alpha_loss_counts_nodes_whose_two_edges_coincide():
    space = DartsSpace(channels=4, layers=3)
    k = len(space.ops)
    arch = {}
    for t in ("normal", "reduce"):
        for n in range(4):
            same = t == "normal" and n in (0, 2)  # two nodes with both edges (input 0, op 1)
            arch[f"{t}_node{n}_input"] = _one_hot([0, 0 if same else 1], n + 2)
            arch[f"{t}_node{n}_op"] = _one_hot([1, 1 if same else 2], k)
    assert float(space.architecture_penalty(arch)) == 2.0
    uniform = {key: torch.full_like(v, 1 / v.shape[-1]) for key, v in arch.items()}  # relaxed rows
    expected = sum(2 * (1 / (n + 2)) * (1 / k) for n in range(4))  # (n+2) * (1/(n+2))^2 * k * (1/k)^2, x2 types
    assert float(space.architecture_penalty(uniform)) == pytest.approx(expected)
    per_example = {key: v.expand(3, *v.shape) for key, v in arch.items()}
    assert space.architecture_penalty(per_example).tolist() == [2.0, 2.0, 2.0]


def test_alpha_loss_is_added_to_the_objective_with_its_weight():
    torch.manual_seed(0)
    space = DartsSpace(channels=4, layers=3)
    batch = {"train": (torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))),
             "val": (torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))}  # fmt: skip
    z = space.distribution().sample()
    with torch.no_grad():
        plain = StepObjective(space, batch, "gen", 0.5, examples=4)(z)
        penalised = StepObjective(space, batch, "gen", 0.5, examples=4, penalty=0.2)(z)
    torch.testing.assert_close(penalised - plain, 0.2 * space.architecture_penalty(z), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="alpha_loss must be >= 0"):
        SearchModule(space, alpha_loss=-1)


def test_soften_eps_samples_from_the_softened_distribution_and_keeps_the_genotype():
    torch.manual_seed(1)
    space = DartsSpace(channels=4, layers=3)
    with torch.no_grad():
        for v in space.arch.values():
            v.normal_()
    module = SearchModule(space, soften_eps=0.08)
    logits = module.sampling_logits()
    for key, v in space.arch.items():
        q = torch.softmax(v, -1)
        k = v.shape[-1]
        torch.testing.assert_close(torch.softmax(logits[key], -1), (q + 0.08) / (1 + k * 0.08))
    sum(v.sum() for v in logits.values()).backward()
    assert all(p.grad is not None for p in space.arch_parameters())
    genotype = space.genotype()
    assert SearchModule(space).space.genotype() == genotype  # the argmax of phi, softened or not


@pytest.mark.usefixtures("fashion_mnist_available")
def test_restart_after_warmup_keeps_the_rate_then_starts_the_search_with_fresh_optimizers(tmp_path):
    torch.manual_seed(2)
    module = SearchModule(DartsSpace(channels=4, layers=3), Reinforce(), warmup_epochs=1, restart_after_warmup=True)
    trainer = tiny_trainer(tmp_path, epochs=1)
    trainer.fit(module, datamodule=tiny_data())
    opt_w = module.optimizers()[0].optimizer
    assert opt_w.param_groups[0]["lr"] == pytest.approx(3e-4)  # constant over the warm-up
    steps_before = max(int(s["step"]) for s in opt_w.state.values())
    assert steps_before == 3 and not bool(module.restarted)
    trainer = tiny_trainer(tmp_path, epochs=2)
    trainer.fit(module, datamodule=tiny_data())
    opt_w = module.optimizers()[0].optimizer
    assert bool(module.restarted)
    assert max(int(s["step"]) for s in opt_w.state.values()) == 3  # fresh Adam moments at the search start


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_augment_search_augments_both_search_batches_reproducibly(tmp_path):
    from unas_lightning import FashionMNISTDataModule

    seen = {}

    class Spy(SearchModule):
        def training_step(self, batch, batch_idx):
            seen.setdefault(self.tag, []).append({k: v[0].clone() for k, v in batch.items()})
            return super().training_step(batch, batch_idx)

    def run(tag, augment):
        torch.manual_seed(3)
        module = Spy(DartsSpace(channels=4, layers=3), Reinforce())
        module.tag = tag
        dm = FashionMNISTDataModule(batch_size=16, max_train_examples=256, crop_padding=4, flip=True,
                                    augment_search=augment)  # fmt: skip
        tiny_trainer(tmp_path / tag, epochs=1).fit(module, datamodule=dm)

    run("plain", False)
    run("augmented", True)
    run("again", True)
    for plain, aug, again in zip(seen["plain"], seen["augmented"], seen["again"], strict=True):
        assert set(aug) == {"train", "val"}
        assert all(not torch.equal(plain[k], aug[k]) for k in aug), "a search batch was not augmented"
        assert all(torch.equal(aug[k], again[k]) for k in aug), "the augmentation is not reproducible"


def test_imagenet_stem_supernet_and_its_derived_network():
    """DartsSpace(stem="imagenet"): three stride-2 convolutions before the cells (the official ImageNet
    search); the derived network is the DARTS ImageNet network of the same size; fused = edge loop."""
    from unas_lightning.spaces.darts import DartsNetworkImageNet

    torch.manual_seed(4)
    space = DartsSpace(in_channels=3, num_classes=7, channels=8, layers=4, ops="imagenet", stem="imagenet")
    loop = DartsSpace(in_channels=3, num_classes=7, channels=8, layers=4, ops="imagenet", stem="imagenet",
                      fuse_relaxed=False)  # fmt: skip
    loop.load_state_dict(space.state_dict())
    x = torch.randn(2, 3, 64, 64)
    zeta = space.distribution().rsample(0.5).zeta
    torch.testing.assert_close(space(x, zeta), loop(x, zeta), rtol=1e-4, atol=1e-5)
    net = space.derived_network()
    assert isinstance(net, DartsNetworkImageNet) and net.eval()(x).shape == (2, 7)
    with pytest.raises(ValueError, match="stem must be"):
        DartsSpace(stem="mobile")
