"""RetrainModule and the augmentation: recipes and checks (the search -> retrain -> test run on real data is
the README flow in tests/cli/test_first_hour.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

from unas_lightning import RetrainModule
from unas_lightning.data.augment import augment_batch, cutout, random_crop
from unas_lightning.retrain import warmup_cosine


def test_augmentations_keep_shapes_and_do_what_they_say():
    torch.manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    cropped = random_crop(x, 2)
    assert cropped.shape == x.shape
    # every crop is a shifted window of the zero-padded image: its non-zero values appear in order
    for b in range(2):
        values = cropped[b][cropped[b] != 0]
        assert torch.isin(values, x[b]).all()
    holes = cutout(torch.ones(64, 1, 10, 10), 4)
    assert holes.shape == (64, 1, 10, 10)
    zeros = (holes == 0).flatten(1).sum(1)
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square, clipped at the border
    assert augment_batch(x, 0, False, 0) is x


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = warmup_cosine(opt, warmup_epochs=2, max_epochs=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(1.0)
    assert lrs[-1] < 0.05 and all(a >= b for a, b in itertools.pairwise(lrs[2:]))


def test_bad_retrain_settings_stop_early():
    with pytest.raises(ValueError, match="drop_path_prob"):
        RetrainModule("DARTS_V2", drop_path_prob=1.5)
    with pytest.raises(ValueError, match="does not fit a ProxylessNAS-space genotype"):
        RetrainModule("PROXYLESS_GPU", network="cifar")
    with pytest.raises(FileNotFoundError, match="give a JSON file path or one of"):
        RetrainModule("no/such/genotype.json")
