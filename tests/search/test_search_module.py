"""SearchModule on real Fashion-MNIST batches: the alternating steps, warm-up, outputs."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from conftest import tiny_data, tiny_trainer

from unas_lightning import SearchModule
from unas_lightning.arch_loss import WithRelaxed
from unas_lightning.estimators import Rebar, Reinforce
from unas_lightning.search.objectives import generalization_loss
from unas_lightning.spaces import DartsGenotype, DartsSpace


def test_generalization_loss_is_eq_8():
    lt, lv = torch.tensor(1.0), torch.tensor(1.6)
    assert torch.isclose(generalization_loss(lt, lv, 0.5), torch.tensor(1.3))
    assert torch.isclose(generalization_loss(lv, lt, 0.5), torch.tensor(1.9))


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
@pytest.mark.parametrize("w_step_arch", ["discrete", "relaxed"])
def test_warmup_trains_w_only_then_phi_moves(tmp_path, w_step_arch):
    L.seed_everything(0)
    space = DartsSpace(channels=4, layers=3)
    module = SearchModule(space, estimator=Rebar(), warmup_epochs=1, w_step_arch=w_step_arch)
    phi0 = [p.detach().clone() for p in space.arch_parameters()]
    w0 = [p.detach().clone() for p in space.weight_parameters()]

    tiny_trainer(tmp_path, epochs=1).fit(module, datamodule=tiny_data())
    assert all(torch.equal(a, b) for a, b in zip(phi0, space.arch_parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(w0, space.weight_parameters(), strict=True))

    tiny_trainer(tmp_path, epochs=2).fit(module, datamodule=tiny_data())
    assert any(not torch.equal(a, b) for a, b in zip(phi0, space.arch_parameters(), strict=True))
    genotype = DartsGenotype.load(tmp_path / "genotype.json")
    assert genotype == space.genotype()
    history = [json.loads(line) for line in (tmp_path / "genotypes.jsonl").read_text().splitlines()]
    # warm-up epochs (the whole first fit, the first epoch of the second) have no result to write
    assert [h["epoch"] for h in history] == [1] and history[-1]["genotype"] == genotype.to_dict()


@pytest.mark.usefixtures("fashion_mnist_available")
def test_phi_step_uses_the_same_architecture_for_both_batches_and_freezes_w(tmp_path):
    """The objective's L_train and L_val are evaluated at the same z (one pass over both batches, or two
    passes with the same rows); the phi-step gives w no gradient."""
    L.seed_everything(1)
    space = DartsSpace(channels=4, layers=3)
    module = SearchModule(space, estimator=Reinforce(), objective="gen")
    seen = []
    original = space.forward

    def spy(x, arch):
        seen.append(({k: v.detach().clone() for k, v in arch.items()}, x.shape[0]))
        return original(x, arch)

    space.forward = spy
    dm = tiny_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))[0]
    loss_fn = module.step_loss(batch)
    out = module.estimator.surrogate(dict(space.arch), loss_fn)
    n = batch["train"][0].shape[0]
    assert [size for _, size in seen] == [2 * n]  # DartsSpace: train and val batch in one grouped pass
    arch = seen[0][0]
    assert all(v.shape == space.arch[k].shape for k, v in arch.items()), "one shared architecture for both"
    assert torch.equal(torch.cat([v.reshape(-1) for v in arch.values()]).unique(), torch.tensor([0.0, 1.0]))
    parts = loss_fn.logs()  # the parts at the sampled z (REINFORCE evaluates one architecture)
    assert torch.isclose(parts["L_gen"], generalization_loss(parts["L_train"], parts["L_val"], 0.5))
    out.loss.backward()
    assert all(p.grad is None for p in space.weight_parameters())
    assert all(p.grad is not None for p in space.arch_parameters())


def test_bad_module_settings_are_rejected():
    space = DartsSpace(channels=4, layers=3)
    with pytest.raises(ValueError, match="unknown objective"):
        SearchModule(space, objective="test")
    with pytest.raises(ValueError, match="gen_lambda must be >= 0"):
        SearchModule(space, gen_lambda=-0.5)
    with pytest.raises(ValueError, match="w_step_arch"):
        SearchModule(space, w_step_arch="both")
    with pytest.raises(ValueError, match="cv_examples must be a positive integer"):
        SearchModule(space, cv_examples=0)
    with pytest.raises(ValueError, match="cv_examples needs arch_samples='batch'"):
        SearchModule(space, cv_examples=4, arch_samples="example")


@pytest.mark.usefixtures("fashion_mnist_available")
def test_cv_examples_evaluates_the_relaxed_terms_on_a_sub_batch(tmp_path):
    """Rebar's L(zeta), L(zeta~) see the first cv_examples examples; L(z) and the w-step see all of them."""
    seen = []

    class Recording(DartsSpace):
        def forward(self, x, arch):
            relaxed = not bool(((arch["normal_node0_op"] == 0) | (arch["normal_node0_op"] == 1)).all())
            seen.append((relaxed, x.shape[0]))
            return super().forward(x, arch)

    L.seed_everything(0)
    module = SearchModule(Recording(channels=4, layers=3), Rebar(), objective="gen", warmup_epochs=0, cv_examples=4)
    tiny_trainer(tmp_path, epochs=1).fit(module, datamodule=tiny_data())
    # relaxed: one grouped pass over (zeta, zeta~) x (train, val) x 4 examples;
    # one-hot: L(z) over (train, val) x 16 in one pass, the w-step and validation over 16
    assert {b for relaxed, b in seen if relaxed} == {2 * 2 * 4}
    assert {b for relaxed, b in seen if not relaxed} == {2 * 16, 16}
    assert any(p.abs().sum() > 0 for p in module.space.arch_parameters()), "phi did not move"


@pytest.mark.usefixtures("fashion_mnist_available")
def test_space_that_does_not_fit_the_data_stops_early(tmp_path):
    module = SearchModule(DartsSpace(in_channels=3, channels=4, layers=3))
    with pytest.raises(ValueError, match="in_channels=1 but the search space was built with in_channels=3"):
        tiny_trainer(tmp_path).fit(module, datamodule=tiny_data())


def test_per_example_architectures_mix_the_supernet_per_example():
    torch.manual_seed(3)
    space = DartsSpace(channels=4, layers=3)
    x = torch.randn(4, 1, 28, 28)
    module = SearchModule(space, arch_samples="example")
    arch = module.w_step_arch(space.arch, examples=4)  # the default: a one-hot z per example
    assert arch["normal_node0_op"].shape == (4, 2, len(space.ops))
    # identical rows for every example reproduce the shared-architecture network exactly
    shared = {k: v[0] for k, v in arch.items()}
    same = {k: v.expand(4, *v.shape) for k, v in shared.items()}
    torch.testing.assert_close(space(x, same), space(x, shared))
    # a one-example batch with per-example rows is that example's own network
    torch.testing.assert_close(space(x[:1], {k: v[:1] for k, v in arch.items()}), space(x[:1], shared))


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
@pytest.mark.parametrize("estimator", [Rebar(), Reinforce()], ids=["rebar", "reinforce"])
def test_per_example_search_step_gives_phi_a_gradient_from_per_example_losses(tmp_path, estimator):
    L.seed_everything(4)
    space = DartsSpace(channels=4, layers=3)
    module = SearchModule(space, estimator=estimator, arch_samples="example")
    dm = tiny_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))[0]
    loss_fn = module.step_loss(batch)
    out = module.estimator.surrogate(module.phi_logits(batch), loss_fn)
    assert out.arch["normal_node0_op"].shape[0] == 16
    assert set(loss_fn.logs()) == {"L_train", "L_val", "L_gen"}
    out.loss.backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in space.arch_parameters())
    phi0 = [p.detach().clone() for p in space.arch_parameters()]
    tiny_trainer(tmp_path, epochs=1).fit(module, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(phi0, space.arch_parameters(), strict=True))


class NaNObjective(SearchModule):
    """A search whose objective is NaN at every architecture (a diverged loss)."""

    def step_loss(self, batch):
        inner = super().step_loss(batch)
        return WithRelaxed(lambda arch: inner(arch) * float("nan"), inner.relaxed())


@pytest.mark.usefixtures("fashion_mnist_available")
def test_nan_losses_never_reach_phi_and_a_streak_stops_the_search(tmp_path):
    L.seed_everything(6)
    space = DartsSpace(channels=4, layers=3)
    module = NaNObjective(space, estimator=Reinforce(), max_nonfinite_steps=10)
    with pytest.warns(UserWarning, match="non-finite phi-step loss"):
        tiny_trainer(tmp_path, epochs=1).fit(module, datamodule=tiny_data())
    assert all(torch.equal(p, torch.zeros_like(p)) for p in space.arch_parameters())
    stopping = NaNObjective(DartsSpace(channels=4, layers=3), estimator=Reinforce(), max_nonfinite_steps=1)
    with pytest.raises(FloatingPointError, match="2 phi-steps in a row"), pytest.warns(UserWarning):
        tiny_trainer(tmp_path, epochs=1).fit(stopping, datamodule=tiny_data())
    assert all(torch.equal(p, torch.zeros_like(p)) for p in stopping.space.arch_parameters())


@pytest.mark.usefixtures("fashion_mnist_available")
def test_ddp_without_unused_parameters_is_refused_with_the_flag_to_use(tmp_path):
    """A step runs only the sampled operations: DDP must allow unused parameters (unas-cli maps 'ddp' to it)."""
    from lightning.pytorch.strategies import DDPStrategy

    module = SearchModule(DartsSpace(channels=4, layers=3), estimator=Reinforce())
    trainer = tiny_trainer(tmp_path, epochs=1, devices=1, strategy=DDPStrategy(find_unused_parameters=False))
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        trainer.fit(module, datamodule=tiny_data())
