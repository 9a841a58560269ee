"""DDP the way users run it: the shipped configs with their default callbacks and the progress bar on.

Each run here changes nothing but the data size (``max_train_examples``), the number of epochs (and of
warm-up epochs) and where it writes: the progress bar, the model summary, the logger, the checkpoint
callback and the ``limit_*`` batches are the config's. Every DDP run is a real 2-process gloo job launched
as ``unas-cli`` in a session of its own, so that a test can check that no rank outlives it (the quickstart on
one process is launched the same way; the retrain checkpoint's one-process ``test`` runs in the test's
process); pytest-timeout fails a test that hangs.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import torch
from conftest import QUICKSTART, ROOT, launch_in_session, run_cli_here

from unas_lightning.cli.checkpoints import find_last_checkpoint, load_checkpoint

pytestmark = [
    pytest.mark.usefixtures("fashion_mnist_available"),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc"),
]

DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
# 512 examples: the search split's 256 + 256 are 8 batches of 32 (4 per rank), under the config's limits
SMALL = ["--data.init_args.max_train_examples", "512"]
# one warm-up epoch (the quickstart has 2) and one search epoch: the first epoch end (where the quickstart
# deadlocked), the warm-up's end and a search epoch (its own 4 epochs run in test_the_quickstart_as_shipped...)
TWO_EPOCHS = ["--model.init_args.warmup_epochs", "1", "--trainer.max_epochs", "2"]


def _search(tmp_path: Path, name: str, *extra: str, timeout: float = 240) -> tuple[int | None, list[str], str]:
    """The quickstart under DDP, each rank's phi dumped after every epoch."""
    probe = {"class_path": "ddp_probe.DumpPhiPerRank", "init_args": {"out_dir": str(tmp_path / name / "probe")}}
    args = [
        "fit", "--config", str(QUICKSTART), *DDP, *SMALL,
        "--trainer.default_root_dir", str(tmp_path / name),
        f"--trainer.callbacks+={json.dumps(probe)}",
        *extra,
    ]  # fmt: skip
    log = tmp_path / f"{name}.log"
    code, left = launch_in_session(args, log, timeout)
    return code, left, log.read_text()


def _phi(tmp_path: Path, name: str, rank: int, epoch: int) -> dict[str, torch.Tensor]:
    return torch.load(tmp_path / name / "probe" / f"phi_rank{rank}_epoch{epoch}.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_mid_epoch_stops_every_rank_with_a_checkpoint_that_resumes_bit_exactly(tmp_path):
    """The quickstart under DDP with its progress bar finishes (it deadlocked at the first epoch end), phi and
    the genotype identical on both ranks; SIGTERM to the launcher mid-epoch (what ``timeout`` and ``scancel``
    send) ends every rank within seconds with status 143 and a ``last.ckpt`` at that batch, and the run
    resumed with ``--ckpt_path last`` ends with the uninterrupted run's phi on both ranks."""
    code, left, text = _search(tmp_path, "full", *TWO_EPOCHS)
    assert code == 0 and not left, text[-3000:]
    assert "sync_dist" not in text, "an epoch-level metric is logged without reducing it across ranks"
    for epoch in range(2):
        a, b = _phi(tmp_path, "full", 0, epoch), _phi(tmp_path, "full", 1, epoch)
        assert all(torch.equal(a[k], b[k]) for k in a), f"phi differs across ranks after epoch {epoch}"
        est = [torch.load(tmp_path / "full" / "probe" / f"estimator_rank{r}_epoch{epoch}.pt") for r in (0, 1)]
        assert "eta" in est[0] and all(torch.equal(est[0][k], est[1][k]) for k in est[0]), f"estimator, epoch {epoch}"
    assert any(v.abs().sum() > 0 for v in _phi(tmp_path, "full", 0, 1).values()), "phi never moved"
    written = json.loads(next((tmp_path / "full").rglob("genotype.json")).read_text())
    ranks = [json.loads((tmp_path / "full" / "probe" / f"genotype_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] == written
    assert len(list((tmp_path / "full").rglob("genotype.json"))) == 1, "more than one rank wrote a genotype"
    history = next((tmp_path / "full").rglob("genotypes.jsonl")).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1], "not one history line per search epoch"

    # rank 1 signals the launcher (rank 0) at the start of batch 2 of epoch 1, the search epoch
    signal_it = {"class_path": "ddp_probe.SignalLauncher", "init_args": {"epoch": 1, "batch": 2}}
    code, left, text = _search(tmp_path, "resumed", *TWO_EPOCHS, f"--trainer.callbacks+={json.dumps(signal_it)}")
    assert code == 128 + signal.SIGTERM, text[-3000:]
    assert not left, f"ranks outlived the launcher: {left}"
    assert "SIGTERM received: stopped at epoch 1" in text and "Traceback" not in text, text[-3000:]
    ckpt = find_last_checkpoint([tmp_path / "resumed"])
    assert ckpt is not None, "no checkpoint was written on SIGTERM"
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 1, state["epoch"]
    positions = state["loops"]["fit_loop"]["state_dict"].get("combined_loader")
    assert positions is not None and all(p["epoch"] == 1 and 2 <= p["batches"] <= 3 for p in positions), positions

    code, left, text = _search(tmp_path, "resumed", *TWO_EPOCHS, "--ckpt_path", "last")
    assert code == 0 and not left, text[-3000:]
    assert f"resuming from {ckpt}" in text
    for rank in (0, 1):
        a, b = _phi(tmp_path, "full", rank, 1), _phi(tmp_path, "resumed", rank, 1)
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff == 0.0, f"rank {rank}: phi differs from the uninterrupted run's by {diff}"
    resumed = max((tmp_path / "resumed").rglob("genotype.json"), key=lambda p: p.stat().st_mtime)
    assert json.loads(resumed.read_text()) == written


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_darts_second_order_keeps_phi_identical_on_every_rank(tmp_path):
    """DartsSecondOrder takes its virtual w-steps on each rank's own batch, outside DDP's hooks, and restores
    w: the run ends, phi has moved in the search epoch and is the same tensor on both ranks."""
    est = "--model.init_args.estimator"
    code, left, text = _search(
        tmp_path, "second_order", *TWO_EPOCHS, est, "unas_lightning.estimators.DartsSecondOrder",
        "--model.init_args.objective", "val", "--model.init_args.w_step_arch", "softmax",
    )  # fmt: skip
    assert code == 0 and not left, text[-3000:]
    # epochs counted from 0: 0 the warm-up, 1 the search epoch
    warm, last = [_phi(tmp_path, "second_order", 0, e) for e in (0, 1)], _phi(tmp_path, "second_order", 1, 1)
    assert any(not torch.equal(warm[0][k], warm[1][k]) for k in last)  # the search epoch moved phi
    assert all(torch.equal(warm[1][k], last[k]) for k in last)  # rank 0 == rank 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_collective_on_one_rank_only_fails_within_the_ddp_timeout_naming_the_hook(tmp_path):
    """A callback that runs a barrier on rank 0 alone (the kind of hook that deadlocked the quickstart) fails
    the run within ``--ddp_timeout`` with one line per rank naming the hook it waited in; no rank is left."""
    bad = {"class_path": "ddp_probe.CollectiveOnRankZero", "init_args": {"epoch": 0}}
    code, left, text = _search(tmp_path, "hang", "--ddp_timeout", "10", f"--trainer.callbacks+={json.dumps(bad)}")
    assert code is not None, "the run hung past the test's limit: the watchdog did not fire"
    assert code == 1, text[-3000:]
    assert not left, f"ranks outlived the launcher: {left}"
    errors = [line[line.index("unas-cli: error:") :] for line in text.splitlines() if "unas-cli: error:" in line]
    assert errors and all("a DDP collective" in e and "DDP-safe hooks" in e for e in errors), text[-3000:]
    # one line per rank: rank 0, whose collective may fail because rank 1 left first, waits for rank 1 to
    # print its own reason before stopping it (a seed-13 run under load lost rank 1's line)
    assert sorted(e.split("rank ")[1][0] for e in errors) == ["0", "1"], errors
    assert any("did not complete in time (--ddp_timeout)" in e for e in errors), errors
    # every line names its hook: "...(--ddp_timeout) in Class.hook" for the rank that timed out, "failed in
    # Class.hook" for a rank whose peer left first (which rank times out first depends on the machine's load)
    assert all(re.search(r"(\)|failed) in [A-Z]\w*\.\w+", e) for e in errors), errors
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_shipped_retrain_config_runs_under_ddp(tmp_path, capsys):
    """configs/retrain/quick_fmnist.yaml (UNAS_CIFAR10) on 2 processes with its callbacks and progress bar: one
    version folder, one checkpoint, written once; then the test entry point on it. Only the data sizes change:
    256 training images, 4 validation and 8 test batches (the config validates on 20 of its 157 test batches)."""
    args = [
        "fit", "--config", str(ROOT / "configs/retrain/quick_fmnist.yaml"), *DDP,
        "--data.init_args.max_train_examples", "256", "--trainer.limit_val_batches", "4",
        "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    code, left = launch_in_session(args, tmp_path / "retrain.log", 240)
    assert code == 0 and not left, (tmp_path / "retrain.log").read_text()[-3000:]
    runs = tmp_path / "retrain_quick"
    assert sorted(p.name for p in runs.iterdir()) == ["latest", "version_0"]
    ckpt = runs / "latest" / "checkpoints" / "last.ckpt"
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and state["hyper_parameters"]["genotype"]["space"] == "darts"

    # the test entry point, on one process (this one: it needs none of its own), as the search prints it
    test = ["test", "--config", str(ROOT / "configs/retrain/quick_fmnist.yaml"), "--ckpt_path", str(ckpt)]
    proc = run_cli_here([*test, "--trainer.limit_test_batches", "8"], capsys)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "test/acc_top1" in text and "Testing DataLoader 0: 100%" in text, text[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_nas_bench_201_search_config_runs_under_ddp_with_its_ranking_monitor(tmp_path):
    """configs/search/nb201_fmnist.yaml on 2 processes as shipped (progress bar, checkpoints, RankingMonitor
    against FMNIST-201 on rank 0 alone after the warm-up): it ends, no rank is left, ranking.json has one
    evaluation and the genotype is written."""
    args = [
        "fit", "--config", str(ROOT / "configs/search/nb201_fmnist.yaml"), *DDP, *SMALL,
        "--trainer.default_root_dir", str(tmp_path), *TWO_EPOCHS,
        "--trainer.callbacks.init_args.train_missing", "false",  # GroundTruthReport: see tests/spaces/test_nb201.py
    ]  # fmt: skip
    code, left = launch_in_session(args, tmp_path / "nb201.log", 240)
    text = (tmp_path / "nb201.log").read_text()
    assert code == 0 and not left, text[-3000:]
    run = tmp_path / "nb201_fmnist" / "latest"
    (evaluation,) = json.loads((run / "ranking.json").read_text())["evaluations"]
    assert evaluation["epoch"] == 1 and -1 <= evaluation["kendall_tau"] <= 1  # at the end of the warm-up epoch
    assert text.count("RankingMonitor (epoch 1") == 1 and (run / "genotype.json").is_file()
    assert text.count("ground truth (fmnist201) of the found cell") == 1, "not judged, or judged on every rank"
    assert json.loads((run / "summary.json").read_text())["ground_truth"]["truth"] == "fmnist201"


@pytest.mark.slow
def test_the_quickstart_as_shipped_on_one_process(tmp_path):
    """The README's first command on 512 examples: progress bar, model summary, TensorBoard logger, checkpoints
    and batch limits as configured; the files the README names are written, in <root>/<logger name>/version_0
    with ``latest`` naming it; ArchitectureMonitor's scalars, heatmaps and summary (the search network and the
    retrain config's larger network, sized)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = ["fit", "--config", str(QUICKSTART), *SMALL, "--trainer.default_root_dir", str(tmp_path)]
    code, left = launch_in_session(args, tmp_path / "search.log", 240)
    text = (tmp_path / "search.log").read_text()
    assert code == 0 and not left, text[-3000:]
    assert "Epoch 3: 100%" in text and "Total params" in text, "no progress bar or no model summary"
    assert "manual optimization" not in text, "Lightning's ModelCheckpoint warning (with its code example) is back"
    run = tmp_path / "quickstart" / "latest"
    assert run.resolve() == (tmp_path / "quickstart" / "version_0").resolve()
    for name in ("genotype.json", "genotypes.jsonl", "summary.json", "config.yaml", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("space.arch.") for k in state)
    events = EventAccumulator(str(next(run.glob("events.out.tfevents.*")).parent)).Reload()
    assert {"arch/entropy/normal_node0_op", "arch/max_prob/reduce_node3_input"} <= set(events.Tags()["scalars"])
    assert len(events.Images("arch/p_phi")) == 4  # one per epoch
    summary = json.loads((run / "summary.json").read_text())
    assert summary["genotype"] == json.loads((run / "genotype.json").read_text())
    search_net, retrain_net = summary["search_network"], summary["retrain_network"]
    assert search_net["parameters"] > 0 and search_net["multiply_adds"] > 0 and summary["costs"] == {}
    # the quickstart names its retrain config: the network retraining trains is the larger one, and sized
    assert retrain_net["config"] == "configs/retrain/quick_fmnist.yaml" and "error" not in retrain_net
    assert retrain_net["parameters"] > 3 * search_net["parameters"]
    assert "--model.init_args.genotype" in retrain_net["command"]
    assert "retrain it:" in text and str(run.resolve() / "genotype.json") in text.replace("\n", "")
