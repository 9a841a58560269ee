"""EstimatorDiagnostics: statistics on known samples, logs during a real search, no effect on the search."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from conftest import run_cli_here, tiny_args, tiny_data, tiny_trainer
from lightning.pytorch.loggers import CSVLogger

from unas_lightning import SearchModule
from unas_lightning.callbacks import EstimatorDiagnostics, gradient_statistics
from unas_lightning.estimators import Rebar, Reinforce
from unas_lightning.spaces import DartsSpace


def test_gradient_statistics_on_known_samples():
    torch.manual_seed(0)
    mean = torch.tensor([3.0, 0.0, -4.0])
    samples = mean + 0.5 * torch.randn(200_000, 3)
    stats = gradient_statistics(samples)
    assert stats["variance"] == pytest.approx(0.25, rel=0.02)
    assert stats["log_variance"] == pytest.approx(math.log(0.25), abs=0.02)
    assert stats["snr"] == pytest.approx(5.0 / math.sqrt(3 * 0.25), rel=0.02)
    assert 0.9 < stats["cosine"] < 1.0
    assert gradient_statistics(mean.repeat(4, 1))["variance"] == 0.0  # a deterministic estimator
    with pytest.raises(ValueError, match="m >= 2"):
        gradient_statistics(mean[None])


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="num_estimates"):
        EstimatorDiagnostics(num_estimates=1)
    with pytest.raises(ValueError, match="every_n_steps"):
        EstimatorDiagnostics(every_n_steps=0)


def _fit(tmp_path, callbacks):
    L.seed_everything(5)
    space = DartsSpace(channels=4, layers=3)
    estimator = Rebar(self_tuning=True, tune_temperature=False)  # the quickstart's, with its sub-batch control variate
    module = SearchModule(space, estimator=estimator, warmup_epochs=0, cv_examples=4)
    trainer = tiny_trainer(
        tmp_path, epochs=1, limit_train_batches=4, logger=CSVLogger(tmp_path), log_every_n_steps=1, callbacks=callbacks
    )
    trainer.fit(module, datamodule=tiny_data())
    return module


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_diagnostics_do_not_change_the_search(tmp_path):
    """The draws use a forked RNG and a copy of the estimator: same phi and estimator state with or without."""
    diag = EstimatorDiagnostics(every_n_steps=2, num_estimates=3, compare=[Reinforce()])
    with_diag = _fit(tmp_path / "a", [diag])
    without = _fit(tmp_path / "b", [])
    for k in with_diag.space.arch:
        torch.testing.assert_close(with_diag.space.arch[k], without.space.arch[k], rtol=0, atol=0)
    torch.testing.assert_close(with_diag.estimator.eta, without.estimator.eta, rtol=0, atol=0)
    assert with_diag.estimator.eta.item() != 1.0  # the tuned state moved, identically in both runs
    assert set(diag.latest) == {"search", "Reinforce"}
    assert diag.state_dict()["search_steps"] == 4


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_diagnostics_log_variance_and_snr_during_a_quickstart_search(tmp_path, capsys):
    callback = {
        "class_path": "unas_lightning.callbacks.EstimatorDiagnostics",
        "init_args": {
            "every_n_steps": 1,
            "num_estimates": 3,
            "compare": [{"class_path": "unas_lightning.estimators.Reinforce", "init_args": {"num_samples": 2}}],
        },
    }
    args = tiny_args(tmp_path, f"--trainer.callbacks+={json.dumps(callback)}")
    proc = run_cli_here(args, capsys)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(tmp_path.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for name in ("search", "Reinforce"):
        for stat in ("variance", "log_variance", "snr", "cosine", "seconds"):
            assert f"diag/{name}/{stat}" in tags, sorted(tags)
    snr = [e.value for e in events.Scalars("diag/search/snr")]
    variance = [e.value for e in events.Scalars("diag/Reinforce/variance")]
    assert len(snr) == 3  # 3 search steps (epoch 2 of the tiny run), measured every step
    assert all(math.isfinite(v) and v > 0 for v in snr + variance)


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_ranking_monitor_without_a_truth_logs_spread_and_stability_on_a_darts_search(tmp_path):
    """No ground truth: architectures drawn uniformly from the space, the same ones and batches at every
    evaluation (end of the 1-epoch warm-up, then every epoch), spread and stability in the CSV log; each
    architecture's batch norms re-estimated on the 2 search-val batches after the 2 evaluated."""
    from unas_lightning.callbacks import RankingMonitor

    L.seed_everything(5)
    monitor = RankingMonitor(cells=6, batches=2, every_n_epochs=1, recalibrate_batches=2)
    module = SearchModule(DartsSpace(channels=4, layers=3), estimator=Reinforce(), warmup_epochs=1)
    trainer = tiny_trainer(tmp_path, epochs=2, logger=CSVLogger(tmp_path), callbacks=[monitor])
    trainer.fit(module, datamodule=tiny_data())
    first, second = json.loads(next(tmp_path.rglob("ranking.json")).read_text())["evaluations"]
    data, calibration = monitor._data or [], monitor._calibration or []
    assert len(data) == len(calibration) == 2 and not torch.equal(data[0][0], calibration[0][0])
    assert [first["epoch"], second["epoch"]] == [1, 2] and first["architectures"] == second["architectures"]
    assert first["truth"] is None and "kendall_tau" not in first and "stability" not in first
    assert -1 <= second["stability"] <= 1 and all(0 <= a <= 100 for a in first["supernet"] + second["supernet"])
    logged = (next(tmp_path.rglob("metrics.csv"))).read_text().splitlines()[0].split(",")
    assert {"ranking/mean_accuracy", "ranking/accuracy_spread", "ranking/stability"} <= set(logged)
    with pytest.raises(ValueError, match="truth must be one of"):
        RankingMonitor(truth="cifar-10")
    with pytest.raises(ValueError, match="cells must be an integer >= 2"):
        RankingMonitor(cells=1)
    with pytest.raises(ValueError, match="at_epochs must hold integers >= 1"):
        RankingMonitor(at_epochs=[0, 4])
    with pytest.raises(ValueError, match="recalibrate_batches must be an integer >= 0"):
        RankingMonitor(recalibrate_batches=-1)


def test_the_p_phi_heatmap_names_its_columns_per_family_of_selectors():
    """ArchitectureMonitor.heatmap: the DARTS space's input rows and operation rows in two panels whose columns
    carry the names; a space whose selectors share no names gets one panel with the names in its cells."""
    from unas_lightning.callbacks import ArchitectureMonitor
    from unas_lightning.spaces import NB201Space

    def panels(space):
        probs = {k: torch.softmax(v.detach(), -1) for k, v in space.arch.items()}
        fig = ArchitectureMonitor.heatmap(space, probs)
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        return [([t.get_text() for t in ax.get_xticklabels()], len(ax.get_yticklabels()), len(ax.texts)) for ax in axes]

    darts = DartsSpace(in_channels=1, num_classes=10, channels=4, layers=2, nodes=4)
    (inputs, n_inputs, _), (ops, n_ops, _) = panels(darts)
    assert inputs == darts.category_names("normal_node3_input") and n_inputs == 16  # 2 cells x 4 nodes x 2 inputs
    assert ops == darts.category_names("normal_node0_op") and n_ops == 16
    assert [p[:2] for p in panels(NB201Space())] == [(NB201Space().category_names("cell"), 6)]

    class Unnamed(DartsSpace):
        def category_names(self, key):
            return [f"{key}:{i}" for i in range(self.arch[key].shape[-1])]

    ((_, rows, texts),) = panels(Unnamed(in_channels=1, num_classes=10, channels=4, layers=2, nodes=4))
    assert rows == 32 and texts == sum(v.numel() for v in darts.arch.values())  # every cell named


def test_the_heatmap_drawn_again_each_epoch_is_the_heatmap_of_that_epochs_p_phi(tmp_path):
    """Without a TensorBoard logger ArchitectureMonitor writes arch/p_phi_epoch{e}.png; it lays its figure out once
    and redraws only the colours and title after: each epoch's image is pixel for pixel the image of a figure
    built anew for that epoch's p_phi (phi moved between the epochs, so the images differ)."""
    import matplotlib.image

    from unas_lightning.callbacks import ArchitectureMonitor

    torch.manual_seed(0)
    module = SearchModule(DartsSpace(in_channels=1, num_classes=10, channels=4, layers=2), Reinforce())
    module.warmup_epochs = 0
    phis = []

    class KeepPhi(L.Callback):  # runs after ArchitectureMonitor: the p_phi its image shows
        def on_train_epoch_end(self, trainer, pl_module):
            phis.append({k: torch.softmax(v.detach().float(), -1) for k, v in pl_module.space.arch.items()})

    trainer = tiny_trainer(tmp_path, epochs=2, callbacks=[ArchitectureMonitor(), KeepPhi()])
    trainer.fit(module, datamodule=tiny_data())
    images = [matplotlib.image.imread(tmp_path / "arch" / f"p_phi_epoch{e}.png") for e in (0, 1)]
    assert not torch.equal(torch.as_tensor(images[0]), torch.as_tensor(images[1])), "phi never moved"
    for epoch, (image, probs) in enumerate(zip(images, phis, strict=True)):
        fresh = ArchitectureMonitor.heatmap(module.space, probs, title=f"p_phi after epoch {epoch}")
        fresh.savefig(tmp_path / "fresh.png", dpi=100)
        assert torch.equal(torch.as_tensor(image), torch.as_tensor(matplotlib.image.imread(tmp_path / "fresh.png")))
