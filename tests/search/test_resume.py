"""Checkpoint and resume: a search killed with SIGKILL mid-epoch resumes to the uninterrupted result."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import ROOT, run_cli, run_cli_here

from unas_lightning.cli.checkpoints import find_last_checkpoint, load_checkpoint


def _search(tmp_path, name: str, *extra: str, capsys=None) -> subprocess.CompletedProcess:
    """The search in a child process, or in this one when ``capsys`` is given (a run that is not killed)."""
    probe = {"class_path": "ddp_probe.DumpPhiPerRank", "init_args": {"out_dir": str(tmp_path / name / "probe")}}
    args = [
        "fit", "--config", str(ROOT / "configs/search/quickstart.yaml"),
        "--trainer.default_root_dir", str(tmp_path / name),
        "--trainer.accelerator", "cpu",
        "--trainer.max_epochs", "3",
        "--trainer.limit_train_batches", "6",
        "--trainer.limit_val_batches", "1",
        "--trainer.callbacks.init_args.every_n_train_steps", "4",
        f"--trainer.callbacks+={json.dumps(probe)}",
        "--model.init_args.warmup_epochs", "1",
        "--data.init_args.batch_size", "16",
        "--data.init_args.max_train_examples", "512",
        *extra,
    ]  # fmt: skip
    return run_cli(args) if capsys is None else run_cli_here(args, capsys)


def _genotype(run_dir) -> dict:
    newest = max(run_dir.rglob("genotype.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_phi_and_genotype(tmp_path, capsys):
    full = _search(tmp_path, "full", capsys=capsys)  # the uninterrupted run needs no process of its own
    assert full.returncode == 0, full.stderr[-3000:]

    # epoch 1 is a search epoch (w and phi steps: two optimizer steps per batch); last.ckpt is written
    # at global steps 4, 8, 12, 16, so the kill at batch 5 loses one batch after the step-16 checkpoint.
    kill = json.dumps({"class_path": "ddp_probe.KillSelf", "init_args": {"epoch": 1, "batch": 5}})
    killed = _search(tmp_path, "resumed", f"--trainer.callbacks+={kill}")
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpt = find_last_checkpoint([tmp_path / "resumed"])
    assert ckpt is not None, "no last.ckpt was written before the kill"
    state = load_checkpoint(ckpt)  # weights_only=True: no pickled objects in a search checkpoint
    assert state["epoch"] == 1 and state["global_step"] == 16, (state["epoch"], state["global_step"])
    positions = state["loops"]["fit_loop"]["state_dict"].get("combined_loader")
    assert positions == [{"epoch": 1, "batches": 5}] * 2, positions  # search-train and search-val loaders

    resumed = _search(tmp_path, "resumed", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {ckpt}" in resumed.stderr + resumed.stdout

    for epoch in (1, 2):
        a = torch.load(tmp_path / "full" / "probe" / f"phi_rank0_epoch{epoch}.pt", weights_only=True)
        b = torch.load(tmp_path / "resumed" / "probe" / f"phi_rank0_epoch{epoch}.pt", weights_only=True)
        assert a.keys() == b.keys()
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff == 0.0, f"phi after epoch {epoch} differs from the uninterrupted run by {diff}"
    assert any(v.abs().sum() > 0 for v in a.values()), "phi never moved: the comparison would be vacuous"
    assert _genotype(tmp_path / "resumed") == _genotype(tmp_path / "full")


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_ckpt_path_last_without_a_checkpoint_starts_a_fresh_run(tmp_path):
    """A job script can always pass --ckpt_path last: the first run starts afresh and says so."""
    from conftest import tiny_args

    proc = run_cli(tiny_args(tmp_path, "--trainer.max_epochs", "1", "--ckpt_path", "last"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no last.ckpt under" in proc.stderr + proc.stdout and "starting a fresh run" in proc.stderr + proc.stdout
    assert find_last_checkpoint([tmp_path]) is not None
