"""The supernet training options of the ranking study: fair, path-dropout and de-isomorphic w-steps, the
warm-up's own w-step, affine cell norms, few-shot splits and training at the FMNIST-201 resolution."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import tiny_data, tiny_trainer

from unas_lightning import FashionMNISTDataModule, SearchModule
from unas_lightning.estimators import Reinforce
from unas_lightning.search.deisomorphic import DeIsomorphicSample
from unas_lightning.search.few_shot import candidate_of, pick, split_supernet
from unas_lightning.search.w_step import DiscreteSample, FairSample, PathDropout, resolve_w_step_arch
from unas_lightning.spaces import NB201Genotype, NB201Space


def _logits(rows: int = 6, candidates: int = 5) -> dict[str, torch.Tensor]:
    return {"cell": torch.randn(rows, candidates), "small": torch.randn(2, 3)}


def test_fair_sample_trains_every_candidate_of_every_row_exactly_once_per_update():
    torch.manual_seed(0)
    paths = FairSample().paths(_logits())
    assert len(paths) == 5  # the largest number of candidates
    cell = torch.stack([p["cell"] for p in paths])  # [paths, rows, candidates], one-hot
    assert torch.equal(cell.sum(-1), torch.ones(5, 6))
    assert torch.equal(cell.sum(0), torch.ones(6, 5))  # each candidate of each row once
    small = torch.stack([p["small"] for p in paths])  # 3 candidates in 5 paths: each at least once
    assert torch.equal(small.sum(-1), torch.ones(5, 2)) and bool((small.sum(0) >= 1).all())
    per_example = FairSample().paths(_logits(), examples=4)
    assert per_example[0]["cell"].shape == (4, 6, 5)
    assert torch.equal(torch.stack([p["cell"] for p in per_example]).sum(0), torch.ones(4, 6, 5))
    orders = {tuple(p["cell"].argmax(-1).tolist()) for p in FairSample().paths(_logits())}
    assert len(orders) == 5  # fresh permutations, not the identity


def test_path_dropout_keeps_a_random_non_empty_subset_of_every_row():
    torch.manual_seed(0)
    arch = PathDropout(drop=0.5)(_logits(rows=400))
    rows = arch["cell"]
    assert set(rows.unique().tolist()) <= {0.0, 1.0} and bool((rows.sum(-1) >= 1).all())
    assert 0.45 < float(rows.mean()) < 0.6  # about half kept, a bit more (an empty row keeps one)
    assert torch.equal(PathDropout(drop=0.0)(_logits())["cell"], torch.ones(6, 5))
    with pytest.raises(ValueError, match=r"drop must lie in \[0, 1\)"):
        PathDropout(drop=1.0)
    assert isinstance(resolve_w_step_arch("fair"), FairSample)
    assert isinstance(resolve_w_step_arch("path_dropout"), PathDropout)


def test_deisomorphic_sample_trains_every_distinct_nb201_cell_equally_often():
    """Under a uniform phi a genotype drawn uniformly lies in an isomorphism class of 33.5 genotypes on average
    (the degenerate, mostly-"none" cells), one drawn de-isomorphically in one of 2.37 (15,284 connected
    genotypes / 6,461 classes: every class equally likely). 2,000 draws, seed 0; tolerance 0.4 (the mean's
    standard error is about 0.06 de-isomorphically, about 1.0 for the uniform draw)."""
    sizes = {}
    for g in NB201Genotype.all():
        if g.connected():
            sizes[g.unique_key()] = sizes.get(g.unique_key(), 0) + 1

    def draws(sample: object, n: int = 2000) -> list[NB201Genotype]:
        return [NB201Genotype.from_rows(sample({"cell": torch.zeros(6, 5)})["cell"]) for _ in range(n)]

    def mean_class_size(genotypes: list[NB201Genotype]) -> float:  # a disconnected cell counts 0
        return sum(sizes.get(g.unique_key(), 0) for g in genotypes if g.connected()) / len(genotypes)

    torch.manual_seed(0)
    deiso = resolve_w_step_arch("deisomorphic")
    assert isinstance(deiso, DeIsomorphicSample)
    drawn = draws(deiso)
    assert all(g.connected() for g in drawn) and abs(mean_class_size(drawn) - 2.37) < 0.4
    assert mean_class_size(draws(DiscreteSample())) > 25  # what the "discrete" warm-up trains on
    # phi still counts: a phi that all but fixes a dense cell returns it; one row per example on request
    dense = NB201Genotype.from_arch_str(
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    )
    logits = {"cell": 20 * torch.nn.functional.one_hot(torch.tensor([3, 3, 3, 1, 3, 3]), 5).float()}
    assert NB201Genotype.from_rows(deiso(logits)["cell"]) == dense
    per_example = deiso({"cell": torch.zeros(6, 5)}, examples=3)["cell"]
    assert per_example.shape == (3, 6, 5) and torch.equal(per_example.sum(-1), torch.ones(3, 6))
    with pytest.raises(ValueError, match="DeIsomorphicSample is for the NAS-Bench-201 space"):
        deiso(_logits())


@pytest.mark.usefixtures("fashion_mnist_available")
def test_warmup_w_step_arch_trains_the_warmup_and_the_search_uses_eq_7(tmp_path):
    """The warm-up's w-step runs "fair" (5 forward-backward passes, one optimizer step per w update);
    after it, the search's w-step is the one-hot z ~ p_phi again."""
    L.seed_everything(0)
    space = NB201Space(in_channels=1, num_classes=10, channels=4, cells_per_stage=1)
    module = SearchModule(space, estimator=Reinforce(), warmup_epochs=1, warmup_w_step_arch="fair")
    assert isinstance(module.w_step_arch, DiscreteSample) and isinstance(module.warmup_w_step_arch, FairSample)
    passes: list[int] = []  # forward passes of the supernet per training step
    original = space.forward

    def counting(x, arch):
        if space.training:  # not the validation loop's evaluations
            passes[-1] += 1
        return original(x, arch)

    space.forward = counting  # type: ignore[method-assign]

    class Count(L.Callback):
        def on_train_batch_start(self, *args):
            passes.append(0)

    trainer = tiny_trainer(tmp_path, epochs=2, callbacks=[Count()])
    trainer.fit(module, datamodule=tiny_data())
    steps = trainer.num_training_batches
    assert passes[:steps] == [5] * steps  # warm-up: fair paths only (no phi-step)
    assert all(p < 5 for p in passes[steps:])  # search: one w pass + the estimator's passes
    assert module.phi_steps == steps


def test_cell_affine_adds_a_scale_and_shift_per_operation_norm():
    plain = NB201Space(in_channels=1, num_classes=10, channels=4, cells_per_stage=1)
    affine = NB201Space(in_channels=1, num_classes=10, channels=4, cells_per_stage=1, cell_affine=True)
    extra = sum(p.numel() for p in affine.weight_parameters()) - sum(p.numel() for p in plain.weight_parameters())
    # 3 cells x 6 edges x 2 conv ops (one norm each) x 2 (scale, shift) x channels (4, 8, 16)
    assert extra == 6 * 2 * 2 * (4 + 8 + 16)
    x = torch.randn(2, 1, 16, 16)
    assert affine(x, affine.distribution().sample()).shape == (2, 10)


def test_few_shot_split_copies_the_weights_and_fixes_one_edge():
    torch.manual_seed(0)
    space = NB201Space(in_channels=1, num_classes=10, channels=4, cells_per_stage=1)
    subs = split_supernet(space, "cell", row=3)
    assert len(subs) == 5 and all(s is not space for s in subs)
    for j, sub in enumerate(subs):
        for a, b in zip(space.weight_parameters(), sub.weight_parameters(), strict=True):
            assert torch.equal(a, b) and a is not b
        draws = torch.stack([sub.distribution().sample()["cell"][3] for _ in range(50)])
        assert bool((draws.argmax(-1) == j).all())  # that edge never draws another operation
        other = torch.stack([sub.distribution().sample()["cell"][0] for _ in range(200)]).argmax(-1)
        assert len(other.unique()) == 5  # the other edges still draw every operation
    assert torch.equal(space.arch["cell"], torch.zeros(6, 5))  # the one-shot supernet is left as it was
    genotype = NB201Genotype.from_arch_str("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|none~2|")
    assert candidate_of(space, genotype, "cell", 3) == 4 and pick(subs, genotype, "cell", 3) is subs[4]
    with pytest.raises(ValueError, match="no phi entry 'normal'"):
        split_supernet(space, "normal", 0)
    with pytest.raises(ValueError, match="row must index"):
        split_supernet(space, "cell", 6)


@pytest.mark.usefixtures("fashion_mnist_available")
def test_image_size_resizes_the_images_once_as_fmnist201_does():
    data = FashionMNISTDataModule(batch_size=8, max_train_examples=64, image_size=16)
    assert data.example_shape == (1, 16, 16)
    data.setup("fit")
    x, _ = data.search_split()[0][0]
    assert x.shape == (1, 16, 16)
    full = FashionMNISTDataModule(batch_size=8, max_train_examples=64)
    full.setup("fit")
    big = full._train[:4][0]  # type: ignore[index]
    small = data._train[:4][0]  # type: ignore[index]
    assert torch.allclose(torch.nn.functional.interpolate(big, size=16, mode="area"), small)
    with pytest.raises(ValueError, match="image_size must be an integer >= 4"):
        FashionMNISTDataModule(image_size=2)
