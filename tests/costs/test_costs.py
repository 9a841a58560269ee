"""Hardware costs: measured latency, the linear surrogate, RELAX's freedom from surrogate bias (paper Sec. 3.1),
the cost protocol (meters, CostTerm, several costs in one search), end to end and under DDP."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from unas_lightning.cli.app import main
from unas_lightning.costs import (
    CostTerm,
    Latency,
    ParameterCount,
    fit_cost_model,
    fit_linear_model,
    measure_latency,
)
from unas_lightning.distributions import ArchDistribution
from unas_lightning.estimators import GumbelSoftmax, LinearControl, Relax


def test_measurement_returns_sane_medians_and_restores_the_model():
    small = torch.nn.Conv2d(3, 4, 1)
    large = torch.nn.Sequential(*[torch.nn.Conv2d(64 if i else 3, 64, 3, padding=1) for i in range(4)])
    large.train()
    lat_small = measure_latency(small, (3, 32, 32), batch_size=8, warmup=2, repeats=15, num_threads=1)
    lat_large = measure_latency(large, (3, 32, 32), batch_size=8, warmup=2, repeats=15, num_threads=1)
    assert isinstance(lat_small, Latency) and lat_small.device == "cpu" and lat_small.repeats == 15
    for lat in (lat_small, lat_large):
        assert 0 < lat.q1_ms <= lat.median_ms <= lat.q3_ms
    # about 600x the multiply-adds: the ordering is not a matter of timing noise
    assert lat_large.median_ms > 5 * lat_small.median_ms
    assert large.training  # eval mode only during the measurement
    assert torch.get_num_threads() >= 1
    with pytest.raises(ValueError, match="backend"):
        measure_latency(small, (3, 8, 8), backend="tensorrt")
    with pytest.raises(ValueError, match="batch_size"):
        measure_latency(small, (3, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        measure_latency(small, (3, 8, 8), precision="fp8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        measure_latency(small, (3, 8, 8), backend="cudagraph")


def test_bf16_and_channels_last_measurements_leave_the_model_as_it_was():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lat = measure_latency(model, (3, 16, 16), batch_size=4, warmup=1, repeats=3, precision="bf16", channels_last=True)
    assert lat.precision == "bf16" and lat.channels_last and lat.median_ms > 0
    assert model[0].weight.is_contiguous() and model[0].weight.dtype == torch.float32
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # eval mode: no running stats moved


def _one_hot(idx: list[int], k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(idx), k).float()


def test_surrogate_recovers_known_coefficients_from_synthetic_data():
    gen = torch.Generator().manual_seed(0)
    true = torch.rand(5, 4, generator=gen) * 3  # per-choice latencies of 5 layers x 4 ops
    archs, lat = [], []
    for _ in range(400):
        idx = torch.randint(0, 4, (5,), generator=gen)
        archs.append({"layers": _one_hot(idx.tolist(), 4)})
        lat.append(2.0 + float(true[torch.arange(5), idx].sum()) + 0.01 * float(torch.randn((), generator=gen)))
    fit = fit_linear_model(archs, lat, holdout=0.25, alpha=1e-6)
    w = fit.model.weight["layers"].detach().double()
    # coefficients are identified up to a per-row constant (each row sums to one): compare centred rows
    torch.testing.assert_close(
        w - w.mean(1, keepdim=True), true.double() - true.double().mean(1, keepdim=True), atol=0.01, rtol=0
    )
    assert fit.test_mae < 0.02 and fit.test_mape < 0.5 and (fit.n_train, fit.n_test) == (300, 100)


def _chain_with_neighbour_contention(n: int, seed: int = 0):
    """A 6-layer chain of 4 ops whose cost is additive plus a contention term between consecutive heavy ops
    (3 and 3 in a row cost 0.8 more), as launch-bound or fused kernels behave; 1% multiplicative noise."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(6, 4, generator=gen) + 0.5
    archs, cost = [], []
    for _ in range(n):
        idx = torch.randint(0, 4, (6,), generator=gen)
        heavy_pairs = int(((idx[:-1] == 3) & (idx[1:] == 3)).sum())
        value = 1.0 + float(base[torch.arange(6), idx].sum()) + 0.8 * heavy_pairs
        archs.append({"layers": _one_hot(idx.tolist(), 4)})
        cost.append(value * (1 + 0.01 * float(torch.randn((), generator=gen))))
    return archs, cost


def test_pairwise_cost_model_fits_neighbour_contention_that_the_additive_one_cannot():
    archs, cost = _chain_with_neighbour_contention(400)
    linear = fit_cost_model(archs, cost, kind="linear", holdout=0.25, alpha=1e-3)
    pairwise = fit_cost_model(archs, cost, kind="pairwise", holdout=0.25, alpha=1e-3)
    mlp = fit_cost_model(archs, cost, kind="mlp", holdout=0.25, alpha=1e-4, mlp_steps=600)
    # the noise alone gives a MAPE of about 0.8%; the additive model cannot place the contention
    assert pairwise.test_mape < 1.5 and pairwise.test_within10 == 100.0, pairwise.as_dict()
    assert linear.test_mape > 2.5 * pairwise.test_mape, (linear.as_dict(), pairwise.as_dict())
    assert mlp.kind == "mlp" and mlp.test_mape < linear.test_mape
    auto = fit_cost_model(archs, cost, kind="auto", holdout=0.25, alpha=1e-3, folds=3, mlp_steps=300)
    assert auto.kind == "pairwise" and set(auto.cv_mape) == {"linear", "pairwise", "mlp"}
    assert auto.test_mape == pytest.approx(pairwise.test_mape)  # the same fit on the same split
    assert auto.cv_mape["pairwise"] == min(auto.cv_mape.values())
    with pytest.raises(ValueError, match="unknown cost model"):
        fit_cost_model(archs, cost, kind="tree")


def test_a_pairwise_control_lowers_relax_variance_where_latency_is_not_additive():
    """RELAX with each fitted g on the contention data: unbiased either way, and the closer g (pairwise)
    gives the phi-gradient less variance than the additive one (the same 200 draws for both), at a phi
    that favours the heavy op, where contention is frequent (ratio 0.51-0.55 over seeds 1-3; 0.78-0.83
    at uniform phi, where pairs of heavy ops are rare)."""
    archs, cost = _chain_with_neighbour_contention(400)
    base = torch.rand(6, 4, generator=torch.Generator().manual_seed(0)) + 0.5  # the generator's first draw

    def measured(arch):
        idx = arch["layers"].argmax(-1)
        heavy = ((idx[:-1] == 3) & (idx[1:] == 3)).sum()
        return 1.0 + base[torch.arange(6), idx].sum() + 0.8 * heavy

    spread = {}
    for kind in ("linear", "pairwise"):
        g = fit_cost_model(archs, cost, kind=kind, holdout=0.0, alpha=1e-3).model.requires_grad_(False)
        relax = Relax(control=g, fit="none", temperature=0.5)
        torch.manual_seed(1)
        grads = []
        for _ in range(200):
            phi = torch.tensor([[0.0, 0.0, 0.0, 2.0]] * 6, requires_grad=True)
            relax.surrogate({"layers": phi}, measured).loss.backward()
            grads.append(phi.grad.clone())
        spread[kind] = torch.stack(grads).var(0).sum().item()
    assert spread["pairwise"] < 0.7 * spread["linear"], spread


# -- the paper's "no bias from the approximation" claim -------------------------------------------------
ROWS, K = 3, 3


def true_latency(arch) -> float:
    """Non-additive: op 0 is the cheapest in layers 0 and 1 alone, but the pair (0, 0) contends (+1.2 ms).

    The fastest network is (0, 1, 0) (3.45 ms); an additive model fitted to every architecture spreads
    the contention over both op 0s (+0.4 each) and still ranks (0, 0, 0) first (truly 4.2 ms).
    """
    idx = [int(i) for i in arch["layers"].argmax(-1)]
    additive = [[1.0, 1.9, 2.0], [1.0, 1.45, 2.0], [1.0, 1.8, 2.5]]
    t = sum(additive[r][i] for r, i in enumerate(idx))
    if idx[0] == 0 and idx[1] == 0:
        t += 1.2
    return t


def all_archs():
    for idx in itertools.product(range(K), repeat=ROWS):
        yield list(idx), {"layers": _one_hot(list(idx), K)}


def linear_fit_of_true_latency() -> LinearControl:
    archs = [a for _, a in all_archs()]
    return fit_linear_model(archs, [true_latency(a) for a in archs], holdout=0.0, alpha=1e-6).model


def optimize(estimator, loss_fn, steps=1500, seed=0):
    torch.manual_seed(seed)
    phi = torch.zeros(ROWS, K, requires_grad=True)
    opt = torch.optim.Adam([phi], lr=0.05)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        estimator.surrogate({"layers": phi}, loss_fn).loss.backward()
        opt.step()
    return ArchDistribution({"layers": phi.detach()})


@pytest.mark.slow
@pytest.mark.parametrize("wrong", ["linear-fit", "zero", "shuffled"])
def test_relax_finds_the_truly_fastest_architecture_while_surrogate_only_follows_the_surrogate(wrong):
    best_idx = min(all_archs(), key=lambda t: true_latency(t[1]))[0]
    assert best_idx == [0, 1, 0]
    g = linear_fit_of_true_latency()  # additive: it cannot see the fusion
    with torch.no_grad():
        if wrong == "zero":
            g.weight["layers"].zero_()
        elif wrong == "shuffled":
            w = g.weight["layers"]
            w.copy_(w.flip(-1))  # fastest op per layer becomes the slowest
    with torch.no_grad():
        g_best = min(all_archs(), key=lambda t: float(g(t[1])))[0] if wrong != "zero" else None

    def measured(arch):
        return torch.tensor(true_latency(arch))

    relax = optimize(Relax(control=g, fit="none", temperature=0.5), measured)
    mode = relax.mode()["layers"].argmax(-1).tolist()
    p_best = float(relax.log_prob({"layers": _one_hot(best_idx, K)}).exp())
    assert mode == best_idx and p_best > 0.9, (mode, p_best)

    if g_best is not None:  # FBNet-style: term (iii) alone, the Gumbel-softmax gradient of g
        fbnet = optimize(GumbelSoftmax(temperature=0.5), g)
        assert fbnet.mode()["layers"].argmax(-1).tolist() == g_best != best_idx


def test_cost_term_settings_are_checked():
    meter = ParameterCount()
    with pytest.raises(ValueError, match="weight"):
        CostTerm(meter, weight=-1)
    with pytest.raises(ValueError, match="target must be > 0"):
        CostTerm(meter, target=0)
    with pytest.raises(ValueError, match="hinge penalty needs a target"):
        CostTerm(meter, form="hinge")
    with pytest.raises(ValueError, match="black box"):
        CostTerm(meter, estimator=GumbelSoftmax())
    with pytest.raises(TypeError, match="Meter"):
        CostTerm("latency")
    term = CostTerm(meter, weight=2.0, target=10.0, form="hinge", warmup_epochs=4)
    assert term.name == "params" and [term.weight_at(e) for e in range(5)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert float(term.penalty(torch.tensor(15.0))) == pytest.approx(0.5)
    assert float(term.penalty(torch.tensor(5.0))) == 0.0


def test_cost_term_measures_calibrates_estimates_and_keeps_its_state():
    """A CostTerm on a real space: the value is the meter's on the derived network, cached; calibration
    fits g; the phi-step estimate reaches phi only; the state round-trips."""
    from unas_lightning.spaces import DartsSpace
    from unas_lightning.utils.network_size import count_parameters

    torch.manual_seed(0)
    space = DartsSpace(channels=4, layers=3)
    term = CostTerm(ParameterCount(), weight=2.0, calibration_archs=30)
    term.prepare(dict(space.arch))
    term.setup(space, (1, 28, 28))
    z = space.distribution().sample()
    expected = count_parameters(space.derived_network(space.genotype(z))) / 1e6
    assert term.value(z) == pytest.approx(expected) and term.key(z) in term.cache
    assert "30 architectures measured" in term.calibrate(dict(space.arch)) and bool(term.ready)
    assert term.fit_metrics["n_train"] + term.fit_metrics["n_test"] == 30 and float(term.penalty.reference) > 0
    loss, logs = term.phi_loss(dict(space.arch), search_epoch=0)
    assert set(logs) == {f"cost/params/{k}" for k in ("measured", "predicted", "abs_error", "penalty", "lambda")}
    loss.backward()
    assert all(p.grad is not None for p in space.arch_parameters())
    assert all(p.grad is None for p in term.parameters())  # g is fitted by regression, not by the phi-step
    again = CostTerm(ParameterCount(), weight=2.0, calibration_archs=30)
    again.prepare(dict(space.arch))
    again.load_state_dict(term.state_dict())
    assert again.cache == term.cache and again.phi_steps == 1 and bool(again.ready)
    assert again.predicted(z) == term.predicted(z)


def test_a_cost_term_chooses_its_cost_model_by_held_out_error_and_restores_the_choice():
    from unas_lightning.spaces import ProxylessSpace

    space = ProxylessSpace(in_channels=1, num_classes=10, width_mult=0.25, stem_stride=1)
    term = CostTerm(ParameterCount(), calibration_archs=40, cost_model="auto")
    term.prepare(dict(space.arch))
    term.setup(space, (1, 28, 28))
    line = term.calibrate(dict(space.arch))
    kind = term.fit_metrics["kind"]
    assert f"surrogate ({kind})" in line and "within +-10%" in line
    assert {f"cv_mape_{k}" for k in ("linear", "pairwise", "mlp")} <= set(term.fit_metrics)
    assert term.model.kind == kind and not any(p.requires_grad for p in term.parameters())
    z = space.distribution().sample()
    again = CostTerm(ParameterCount(), calibration_archs=40, cost_model="auto")
    again.prepare(dict(space.arch))
    again.load_state_dict(term.state_dict())
    assert again.model.kind == kind and again.predicted(z) == pytest.approx(term.predicted(z))
    with pytest.raises(ValueError, match="cost_model must be"):
        CostTerm(ParameterCount(), cost_model="tree")


def test_a_search_refuses_two_costs_of_one_name():
    from unas_lightning import SearchModule
    from unas_lightning.spaces import DartsSpace

    with pytest.raises(ValueError, match="two costs are named 'params'"):
        SearchModule(DartsSpace(channels=4, layers=3), costs=[CostTerm(ParameterCount()), CostTerm(ParameterCount())])


def _shrunk(overlay: Path, tmp_path: Path, num_archs: int) -> Path:
    """The overlay config with test-sized calibration (``num_archs``) and 3 timing repeats.

    A parameter count is cheap and additive over the choices, so its term keeps the config's calibration
    (enough networks for an exact linear fit): what a test asserts of it must not depend on which
    architecture the timing-driven search derives."""
    import yaml

    config = yaml.safe_load(overlay.read_text())
    for cost in config["model"]["init_args"]["costs"]:
        meter = cost["init_args"]["meter"]
        if meter != "unas_lightning.costs.ParameterCount":
            cost["init_args"]["calibration_archs"] = num_archs
        if isinstance(meter, dict) and meter["class_path"].endswith("MeasuredLatency"):
            meter["init_args"]["repeats"] = 3
    out = tmp_path / "inputs" / overlay.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config))
    return out


def _quick_latency_args(tmp_path, num_archs: int, *extra: str, overlay: Path | None = None) -> list[str]:
    """``fit`` with the quick latency config (and an overlay of costs), tiny settings, writing into ``tmp_path``."""
    from conftest import ROOT

    costs = (
        ["--config", str(_shrunk(overlay, tmp_path, num_archs))]
        if overlay is not None
        else [
            "--model.init_args.costs.init_args.calibration_archs", str(num_archs),
            "--model.init_args.costs.init_args.meter.init_args.repeats", "3",
        ]
    )  # fmt: skip
    run = tmp_path / "run"
    args = [
        "fit", "--config", str(ROOT / "configs/search/proxyless_latency_quick.yaml"), *costs,
        "--trainer.default_root_dir", str(run),
        "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1",
        "--data.init_args.batch_size", "8",
        "--data.init_args.max_train_examples", "256",
        *extra,
    ]  # fmt: skip
    return args


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_latency_and_parameter_count_are_measured_and_summed_from_a_config(tmp_path):
    """configs/search/latency_and_params.yaml on the quick latency search: both costs calibrated, estimated
    in every phi-step, logged, reported for the derived architecture (the same network for both)."""
    import json

    from conftest import ROOT
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from unas_lightning.genotypes import load_genotype

    overlay = ROOT / "configs/search/latency_and_params.yaml"
    main(
        _quick_latency_args(
            tmp_path, 12, "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1", overlay=overlay
        )
    )
    run = tmp_path / "run"
    genotype = load_genotype(next(run.rglob("genotype.json")))
    assert genotype.space_name == "proxyless" and len(genotype.ops) == 21
    report = json.loads(next(run.rglob("costs.json")).read_text())
    assert set(report["costs"]) == {"latency", "params"} and report["genotype"] == genotype.to_dict()
    latency, params = report["costs"]["latency"], report["costs"]["params"]
    assert latency["measured"] > 0 and latency["predicted"] > 0 and report["device"] == "cpu"
    assert latency["unit"] == "ms" and latency["meter"]["class"] == "MeasuredLatency"
    assert latency["surrogate"]["n_train"] + latency["surrogate"]["n_test"] == 12
    assert params["unit"] == "M" and params["form"] == "hinge" and params["target"] == 0.2
    # the count is additive over the choices and g was fitted to 160 networks (more than its features): the
    # prediction is exact up to the ridge penalty on whichever architecture the measured latencies lead to
    assert params["surrogate"]["n_train"] + params["surrogate"]["n_test"] == 200
    assert params["predicted"] == pytest.approx(params["measured"], rel=1e-3)
    summary = json.loads(next(run.rglob("summary.json")).read_text())
    assert summary["costs"]["latency"]["value"] == latency["measured"]  # one derived network, one latency
    assert summary["costs"]["params"]["value"] == pytest.approx(summary["search_network"]["parameters"] / 1e6)
    events = EventAccumulator(str(next(run.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for name in ("latency", "params"):
        for tag in ("measured", "predicted", "abs_error", "penalty", "lambda", "mode", "surrogate_mape"):
            assert f"cost/{name}/{tag}" in tags, sorted(tags)
    assert all(e.value > 0 for e in events.Scalars("cost/latency/measured"))


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_a_cost_defined_outside_the_package_is_summed_next_to_measured_latency(tmp_path, monkeypatch):
    """examples/custom_cost.py (ActivationMemory), chosen by class_path in examples/custom_cost.yaml."""
    import json

    from conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # as PYTHONPATH=examples does
    main(_quick_latency_args(tmp_path, 8, "--trainer.max_epochs", "2", overlay=ROOT / "examples/custom_cost.yaml"))
    run = tmp_path / "run"
    assert "custom_cost.ActivationMemory" in next(run.rglob("config.yaml")).read_text()
    costs = json.loads(next(run.rglob("costs.json")).read_text())["costs"]
    assert set(costs) == {"latency", "activations"}
    assert costs["activations"]["unit"] == "MB" and costs["activations"]["measured"] > 0
    assert costs["activations"]["meter"] == {"class": "ActivationMemory", "batch_size": 1}


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_ddp_two_processes_with_rebar_gen_and_latency_keep_phi_identical(tmp_path):
    """REBAR + L_gen + measured latency on 2 CPU processes: phi and the measured latencies identical on both
    ranks after every epoch (rank 0 measures every rank's sample and broadcasts)."""
    import json

    probe = json.dumps({"class_path": "ddp_probe.DumpPhiPerRank", "init_args": {"out_dir": str(tmp_path / "probe")}})
    from conftest import run_cli

    proc = run_cli(_quick_latency_args(
        tmp_path, 10,
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "2",
        "--trainer.strategy", "ddp",
        "--trainer.max_epochs", "2",
        f"--trainer.callbacks+={probe}",
    ))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for epoch in range(2):  # the warm-up epoch and one search epoch
        phi0 = torch.load(tmp_path / "probe" / f"phi_rank0_epoch{epoch}.pt", weights_only=True)
        phi1 = torch.load(tmp_path / "probe" / f"phi_rank1_epoch{epoch}.pt", weights_only=True)
        assert all(torch.equal(phi0[k], phi1[k]) for k in phi0), f"phi differs across ranks after epoch {epoch}"
        cache0, cache1 = (
            json.loads((tmp_path / "probe" / f"cost_cache_rank{r}_epoch{epoch}.json").read_text()) for r in (0, 1)
        )
        assert cache0 == cache1, f"ranks disagree on measured latencies after epoch {epoch}"
        if epoch >= 1:  # epoch 0 is the quick config's warm-up: the 10 calibration networks only
            assert len(cache0["latency"]) > 10, "no architecture was timed during search"
    final = torch.load(tmp_path / "probe" / "phi_rank0_epoch1.pt", weights_only=True)
    assert any(v.abs().sum() > 0 for v in final.values()), "phi never moved"
    latency = json.loads(next((tmp_path / "run").rglob("costs.json")).read_text())["costs"]["latency"]
    assert latency["measured"] > 0 and latency["surrogate"]["n_train"] + latency["surrogate"]["n_test"] == 10


@pytest.mark.usefixtures("fashion_mnist_available")
def test_costs_work_from_python_and_bring_their_monitor(tmp_path):
    """As a library: SearchModule(costs=[...]) adds the CostMonitor (and the GenotypeWriter) itself."""
    import json

    from conftest import tiny_data, tiny_trainer

    from unas_lightning import SearchModule
    from unas_lightning.callbacks import CostMonitor, GenotypeWriter
    from unas_lightning.costs import MultiplyAdds
    from unas_lightning.estimators import Reinforce
    from unas_lightning.spaces import DartsSpace

    torch.manual_seed(0)
    costs = [
        CostTerm(ParameterCount(), calibration_archs=10),
        CostTerm(MultiplyAdds(), weight=0.2, calibration_archs=10),
    ]
    module = SearchModule(DartsSpace(channels=4, layers=3), estimator=Reinforce(), costs=costs)
    trainer = tiny_trainer(tmp_path, epochs=1)
    trainer.fit(module, datamodule=tiny_data())
    kinds = [type(cb) for cb in trainer.callbacks]
    assert kinds.count(CostMonitor) == 1 and kinds.count(GenotypeWriter) == 1
    report = json.loads((tmp_path / "costs.json").read_text())
    assert set(report["costs"]) == {"params", "madds"} and report["costs"]["madds"]["unit"] == "M"
    assert all(c.phi_steps == 3 and len(c.cache) >= 10 for c in costs)
