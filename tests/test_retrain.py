"""RetrainModule and the augmentation: recipes, checks, and a search -> retrain -> test run on real data."""

from __future__ import annotations

import itertools
import subprocess

import pytest
import torch
from conftest import ROOT, subprocess_env, tiny_args, unas_cli

from unas_lightning import RetrainModule
from unas_lightning.augment import augment_batch, cutout, random_crop
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


@pytest.mark.usefixtures("fashion_mnist_available")
def test_search_then_retrain_then_test_on_fashion_mnist(tmp_path):
    """The README flow: a quickstart search writes genotype.json; quick_fmnist.yaml retrains it and tests it."""
    env = subprocess_env()
    search = subprocess.run(
        [*unas_cli(), *tiny_args(tmp_path / "search")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert search.returncode == 0, search.stderr[-3000:]
    genotype = next((tmp_path / "search").rglob("genotype.json"))
    common = [
        "--config", str(ROOT / "configs/retrain/quick_fmnist.yaml"),
        "--model.init_args.genotype", str(genotype),
        "--model.init_args.channels", "8",
        "--model.init_args.layers", "3",
        "--trainer.default_root_dir", str(tmp_path / "retrain"),
        "--trainer.enable_progress_bar", "false",
        "--data.init_args.max_train_examples", "512",
    ]  # fmt: skip
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2"]
    fit = subprocess.run(
        [*unas_cli(), "fit", *common, *short],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = next((tmp_path / "retrain").rglob("last.ckpt"))
    test = subprocess.run(
        [*unas_cli(), "test", *common, "--ckpt_path", str(ckpt), "--trainer.limit_test_batches", "3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/acc_top1" in test.stdout + test.stderr
