"""A new user's first hour: no silent bad results, no tracebacks, outputs where they are asked for.

One test per way a first session went wrong: the README's commands after two searches and a resume,
checkpoints of the wrong kind or damaged, output folders that cannot be written, image folders without
images, a failure on rank 0 under DDP, and jsonargparse's errors turned into one line.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import (
    QUICKSTART,
    RANK_VARIABLES,
    ROOT,
    TINY_ARGS,
    launch_in_session,
    run_cli_here,
    subprocess_env,
    tiny_args,
    tiny_data,
    tiny_trainer,
)

QUICK_RETRAIN = ROOT / "configs/retrain/quick_fmnist.yaml"
PROXYLESS = ROOT / "configs/search/proxyless_imagenet_latency.yaml"


def _stopped(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2, no traceback, and ``words`` in the last line of what was printed."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, last
    return last


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# -- the README's flow, twice and resumed ------------------------------------------------------------------


def _readme_command(subcommand: str) -> list[str]:
    """The README's ``unas-cli <subcommand> --config configs/retrain/quick_fmnist.yaml ...`` line, as arguments."""
    for line in (ROOT / "README.md").read_text().splitlines():
        words = shlex.split(line.split("#")[0]) if line.startswith("unas-cli ") else []
        if words[1:4] == [subcommand, "--config", "configs/retrain/quick_fmnist.yaml"]:
            return words[1:]
    raise AssertionError(f"the README has no `unas-cli {subcommand} --config configs/retrain/quick_fmnist.yaml` line")


TINY_RETRAIN = [
    "--model.init_args.channels", "8", "--model.init_args.layers", "3",
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
    "--data.init_args.max_train_examples", "256",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_readme_commands_name_the_newest_search_after_two_quickstarts_and_a_resume(tmp_path, monkeypatch, capsys):
    """Two quickstarts, the second resumed: ``latest`` names the second, whose folder holds its one history;
    the README's retrain command retrains its genotype and the README's test command tests that checkpoint,
    after the genotype file is gone (a retrain checkpoint stores the genotype itself)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the README's relative paths, from a fresh folder
    every_2 = ["--trainer.callbacks.init_args.every_n_train_steps", "2"]  # last.ckpt mid-epoch, as in long runs
    search = ["fit", "--config", "configs/search/quickstart.yaml", *TINY_ARGS, *every_2]
    first = run_cli_here([*search, "--seed_everything", "1"], capsys)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli_here([*search, "--seed_everything", "2", "--trainer.max_epochs", "2"], capsys)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = run_cli_here(
        [*search, "--seed_everything", "2", "--trainer.max_epochs", "3", "--ckpt_path", "last"], capsys
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = tmp_path / "runs" / "quickstart"
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "version_0", "version_1"], "a resume made a new folder"
    assert os.readlink(runs / "latest") == "version_1"
    history = [json.loads(line) for line in (runs / "version_1" / "genotypes.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2], history  # one line per search epoch, none twice
    newest = json.loads((runs / "version_1" / "genotype.json").read_text())
    assert history[-1]["genotype"] == newest
    summary = json.loads((runs / "latest" / "summary.json").read_text())
    assert summary["retrain_network"]["command"] == (
        "unas-cli fit --config configs/retrain/quick_fmnist.yaml --model.init_args.genotype "
        "runs/quickstart/version_1/genotype.json"
    )

    fit = run_cli_here([*_readme_command("fit"), *TINY_RETRAIN], capsys)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "runs" / "retrain_quick" / "latest" / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, weights_only=True)["hyper_parameters"]["genotype"]
    assert stored == newest, "the README's retrain command did not retrain the newest search's genotype"

    (tmp_path / "runs" / "quickstart").rename(tmp_path / "moved")  # the genotype file is gone
    test = run_cli_here([*_readme_command("test"), *TINY_RETRAIN, "--trainer.limit_test_batches", "2"], capsys)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/acc_top1" in test.stdout
    assert sorted(p.name for p in (tmp_path / "runs" / "retrain_quick").iterdir()) == ["latest", "version_0"]

    # a checkpoint of the other kind stops before anything is built, and says what to run instead
    search_ckpt = tmp_path / "moved" / "version_1" / "checkpoints" / "last.ckpt"
    swapped = run_cli_here(
        ["test", "--config", "configs/retrain/quick_fmnist.yaml", "--ckpt_path", str(search_ckpt)], capsys
    )
    _stopped(swapped, "holds a search's supernet", "genotype.json")
    swapped = run_cli_here(["fit", "--config", "configs/search/quickstart.yaml", "--ckpt_path", str(ckpt)], capsys)
    _stopped(swapped, "holds a retrained network", "a search resumes only from a search checkpoint")


# -- checkpoints and output folders -----------------------------------------------------------------------


def _damaged_checkpoint(tmp_path: Path, damage: str) -> Path:
    path = tmp_path / f"{damage.replace(' ', '_')}.ckpt"
    if damage == "random bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy())
    else:  # the first half of a real checkpoint file, as a copy interrupted half way leaves it
        from unas_lightning.retrain import RetrainModule

        whole = tmp_path / "whole.ckpt"
        torch.save({"state_dict": RetrainModule("DARTS_V2", in_channels=1, channels=8, layers=3).state_dict()}, whole)
        path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return path


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
@pytest.mark.parametrize("subcommand", ["fit", "test"])
def test_a_damaged_checkpoint_given_by_path_stops_with_a_message(tmp_path, capsys, subcommand, damage):
    config = QUICKSTART if subcommand == "fit" else QUICK_RETRAIN
    ckpt = _damaged_checkpoint(tmp_path, damage)
    out = tmp_path / "run"
    args = [subcommand, "--config", str(config), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(out)]
    _stopped(run_cli_here(args, capsys), f"cannot read checkpoint {ckpt}", "truncated, corrupted")
    assert not _files(out)


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_an_output_folder_that_cannot_be_written_stops_before_the_run(tmp_path, capsys, where):
    if where == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir(mode=0o555)
        root, problem = tmp_path / "ro" / "runs", "is not writable"
    else:
        (tmp_path / "a_file").write_text("")
        root, problem = tmp_path / "a_file" / "runs", "is a file"
    proc = run_cli_here(tiny_args(root), capsys)
    _stopped(proc, f"cannot write the run's outputs under {root}", problem, "--trainer.default_root_dir")


def test_a_logger_save_dir_is_refused_in_favour_of_default_root_dir(tmp_path, capsys):
    """The loggers write under --trainer.default_root_dir; a save_dir given by hand would be overridden."""
    args = tiny_args(tmp_path / "run", "--trainer.logger.init_args.save_dir", str(tmp_path / "else"))
    _stopped(run_cli_here(args, capsys), "--trainer.logger.init_args.save_dir", "--trainer.default_root_dir")
    assert not _files(tmp_path)


def test_image_folders_without_images_stop_before_any_file_is_written(tmp_path, capsys):
    root = tmp_path / "imagenet"
    for part in ("train", "val"):
        for label in ("n01", "n02"):
            (root / part / label).mkdir(parents=True)
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    out = tmp_path / "run"
    args = ["fit", "--config", str(PROXYLESS), "--trainer.accelerator", "cpu", "--data.init_args.root", str(root)]
    proc = run_cli_here([*args, "--trainer.default_root_dir", str(out)], capsys)
    _stopped(proc, "2 of its 2 class folders hold no image", "n01, n02")
    assert not _files(out), "a failed run left files behind"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the config's GPU is present")
def test_a_gpu_config_without_a_gpu_says_how_to_run_on_the_cpu(tmp_path, capsys):
    """With its data set in place (a folder of one image per part: the data check passes before the model is
    built), the ImageNet latency search config stops at its accelerator, saying how to run on the CPU."""
    for part in ("train", "val"):
        (tmp_path / "imagenet" / part / "n01440764").mkdir(parents=True)
        (tmp_path / "imagenet" / part / "n01440764" / "a.JPEG").write_bytes(b"")
    args = ["fit", "--config", str(PROXYLESS), "--trainer.default_root_dir", str(tmp_path / "run")]
    args += ["--data.init_args.root", str(tmp_path / "imagenet")]
    _stopped(run_cli_here(args, capsys), "--trainer.accelerator cpu")


# -- DDP -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.usefixtures("fashion_mnist_available")
def test_under_ddp_a_failure_on_rank_0_stops_every_rank(tmp_path):
    """A data set missing on rank 0 (prepare_data runs there only): exit 2, and no rank outlives the launcher."""
    (tmp_path / "empty").mkdir()
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    args = tiny_args(tmp_path / "run", *ddp, "--data.init_args.root", str(tmp_path / "empty"))
    log = tmp_path / "log.txt"
    code, left = launch_in_session(args, log, timeout=300)
    text = log.read_text()
    assert code == 2, text[-3000:]
    assert not left, f"ranks outlived the launcher: {left}"
    assert "Fashion-MNIST not found in" in text and "Traceback" not in text, text[-3000:]


@pytest.mark.usefixtures("fashion_mnist_available")
def test_a_child_unas_cli_never_inherits_the_rank_variables_of_an_in_process_ddp_fit(tmp_path):
    """An in-process ``Trainer.fit`` under DDP leaves LOCAL_RANK=0 and friends in ``os.environ`` (Lightning's
    launcher writes them there); a ``unas-cli`` child that inherited them waited for a rank 1 it never
    started. The children's environment drops them, and every test restores ``os.environ``."""
    from lightning.pytorch.strategies import DDPStrategy

    from unas_lightning import SearchModule
    from unas_lightning.estimators import Reinforce
    from unas_lightning.spaces import DartsSpace

    trainer = tiny_trainer(tmp_path, epochs=1, devices=1, strategy=DDPStrategy(find_unused_parameters=True))
    trainer.fit(SearchModule(DartsSpace(channels=4, layers=3), estimator=Reinforce()), datamodule=tiny_data())
    leaked = set(RANK_VARIABLES) & set(os.environ)
    assert "LOCAL_RANK" in leaked  # what Lightning leaves behind (the reason for the two guards)
    assert not leaked & set(subprocess_env()) and subprocess_env()["MASTER_PORT"].isdigit()


def test_a_rendezvous_port_taken_by_another_run_is_named_not_blamed_on_the_hooks(monkeypatch):
    """Two DDP runs started at once can be handed the same port (Lightning picks it by binding port 0 and
    closing it): the line says which port and what to do, not that the ranks were in different collectives."""
    from datetime import timedelta

    import torch.distributed as dist

    from unas_lightning.cli.app import collective_failure

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("MASTER_PORT", str(port))
        with pytest.raises(RuntimeError) as err:
            next(dist.rendezvous(f"tcp://127.0.0.1:{port}?rank=0&world_size=1", timeout=timedelta(seconds=5)))
    line = collective_failure(err.value)
    assert line is not None and f"MASTER_PORT={port} is in use" in line and "different collectives" not in line


# -- messages --------------------------------------------------------------------------------------------


def test_a_rejected_value_is_one_line_with_the_cause_the_key_and_the_file(tmp_path, capsys):
    mine = tmp_path / "mine.yaml"
    mine.write_text("model:\n  init_args:\n    gen_lambda: abc\n")
    proc = run_cli_here(["fit", "--config", str(QUICKSTART), "--config", str(mine)], capsys)
    _stopped(proc, "expected a float, got 'abc'", "key model.init_args.gen_lambda", f"in {mine}")
    assert "Given value" not in proc.stderr and "usage:" not in proc.stderr and len(proc.stderr.splitlines()) <= 3

    proc = run_cli_here(["fit", "--config", str(QUICKSTART), "--model.init_args.estimator.init_args.eta", "x"], capsys)
    _stopped(proc, "expected a float, got 'x'", "key model.init_args.estimator.init_args.eta", "on the command line")

    proc = run_cli_here(["fit", "--config", str(QUICKSTART), "--trainer.limit_val_batches", "x"], capsys)
    _stopped(proc, "expected an int or a float, got 'x'", "key trainer.limit_val_batches")  # every branch

    proc = run_cli_here(["fit", "--config", str(QUICKSTART), "--model.init_args.objective_typo", "gen"], capsys)
    _stopped(proc, "no such option 'objective_typo'", "key model.init_args.objective_typo")


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  max_epochs: [1\n")
    _stopped(run_cli_here(["fit", "--config", str(broken)], capsys), f"{broken}:3:1: YAML syntax error")


def test_batch_limit_one_means_one_batch(tmp_path):
    """``--trainer.limit_val_batches 1`` is the integer 1 (one batch), 1.0 stays 100%, 0.25 a fraction."""
    from unas_lightning.cli.app import UnasCLI

    for given, expected in [("1", 1), ("1.0", 1.0), ("0.25", 0.25), ("4", 4)]:
        cli = UnasCLI(args=[*tiny_args(tmp_path)[1:], "--trainer.limit_val_batches", given], run=False)
        assert cli.trainer.limit_val_batches == expected
        assert type(cli.trainer.limit_val_batches) is type(expected), (given, cli.trainer.limit_val_batches)


def test_help_describes_the_tool_and_lists_the_estimators(capsys):
    proc = run_cli_here(["--help"], capsys)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "Lightning Trainer command line tool" not in text
    for name in (
        "Rebar",
        "Relax",
        "Reinforce",
        "IndeCateR",
        "Softmax",
        "GumbelSoftmax",
        "--model.estimator.help Rebar",
    ):
        assert name in text, name


@pytest.mark.parametrize("which", ["missing", "empty cells"])
def test_visualize_with_a_missing_or_bad_genotype_stops_with_a_message(tmp_path, capsys, which):
    from unas_lightning.analysis.visualize import main as visualize

    target = tmp_path / f"{which.replace(' ', '_')}.json"
    if which == "empty cells":
        target.write_text('{"space": "darts", "normal": [], "reduce": []}')
    with pytest.raises(SystemExit) as stop:
        visualize([str(target)])
    assert stop.value.code == 2 and "Traceback" not in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_benchmark_help_prints_usage_without_running(capsys):
    from conftest import benchmark

    with pytest.raises(SystemExit) as stop:
        benchmark("params").main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "usage:" in out and "|" not in out, out[-2000:]


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_a_file_system_without_symlinks_does_not_stop_the_run(tmp_path, capsys, monkeypatch):
    """``latest`` is a convenience: where symlinks fail (FAT, some network shares) the search still finishes."""
    import unas_lightning.callbacks.latest_link as latest_link

    def no_symlinks(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(latest_link.os, "symlink", no_symlinks)
    with pytest.warns(UserWarning, match="could not point .*latest at version_0"):
        proc = run_cli_here(tiny_args(tmp_path), capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "quickstart" / "version_0" / "genotype.json").is_file()
    assert not (tmp_path / "quickstart" / "latest").exists()
