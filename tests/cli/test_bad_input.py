"""Every user error stops the run early: a message that says what to change, exit code 2, no output files."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import ROOT, run_cli_here, tiny_args

from unas_lightning.genotypes import load_genotype

QUICK_RETRAIN = str(ROOT / "configs/retrain/quick_fmnist.yaml")
COST = json.dumps(
    [{"class_path": "unas_lightning.costs.CostTerm", "init_args": {"meter": "unas_lightning.costs.ParameterCount"}}]
)
TEMPERATURE = "temperature must be a number > 0"


def _run(args: list[str], capsys) -> subprocess.CompletedProcess:
    return run_cli_here(args, capsys)


def _assert_stopped_cleanly(proc: subprocess.CompletedProcess, message: str, out_dir) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    left = [p for p in out_dir.rglob("*") if p.is_file()] if out_dir.exists() else []
    assert not left, f"a failed run left files behind: {left}"


SEARCH_ERRORS = {
    "unknown operation": (
        ["--model.init_args.space.init_args.ops", '["skip_connect", "conv_9x9"]'],
        "unknown operation(s) ['conv_9x9']",
    ),
    "unknown estimator": (["--model.init_args.estimator", "unas_lightning.estimators.Rebra"], "Rebra"),
    "temperature 0": (["--model.init_args.estimator.init_args.temperature", "0"], "temperature must be a number > 0"),
    "temperature < 0": (
        ["--model.init_args.estimator.init_args.temperature", "-1"],
        "temperature must be a number > 0",
    ),
    "negative L_gen lambda": (["--model.init_args.gen_lambda", "-1"], "gen_lambda must be >= 0"),
    "negative cost lambda": (
        ["--model.init_args.costs", COST, "--model.init_args.costs.init_args.weight", "-0.5"],
        "cost 'params': weight (lambda) must be >= 0",
    ),
    "negative cost target": (
        ["--model.init_args.costs", COST, "--model.init_args.costs.init_args.target", "-10"],
        "cost 'params': target must be > 0",
    ),
    "unknown meter": (
        ["--model.init_args.costs", COST, "--model.init_args.costs.init_args.meter", "unas_lightning.costs.Energy"],
        "Energy",
    ),
    "split portion 0": (["--data.init_args.train_portion", "0"], "train_portion must lie strictly between 0 and 1"),
    "split portion > 1": (["--data.init_args.train_portion", "1.5"], "train_portion must lie strictly between 0 and 1"),
    "missing data set": (
        ["--data", "unas_lightning.MNISTDataModule", "--data.init_args.root", "/nonexistent"],
        "MNIST not found in /nonexistent",
    ),
}


@pytest.mark.parametrize("case", sorted(SEARCH_ERRORS))
def test_bad_search_input_stops_early_with_a_message(tmp_path, case, capsys):
    extra, message = SEARCH_ERRORS[case]
    _assert_stopped_cleanly(_run(tiny_args(tmp_path / "run", *extra), capsys), message, tmp_path / "run")


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path):
    from unas_lightning.data.datamodules import FashionMNISTDataModule, MissingDatasetError

    dm = FashionMNISTDataModule(root=str(tmp_path / "nowhere"))
    dm.debian_root = str(tmp_path / "not_installed")  # as on a machine without the Debian package
    with pytest.raises(MissingDatasetError, match="apt-get install dataset-fashion-mnist"):
        dm.prepare_data()


@pytest.mark.usefixtures("fashion_mnist_available")
def test_a_root_the_user_names_is_the_root_used(tmp_path):
    """An empty --data.init_args.root does not silently fall back to the system copy of Fashion-MNIST."""
    from unas_lightning.data.datamodules import FASHION_MNIST_DEBIAN, FashionMNISTDataModule, MissingDatasetError

    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDatasetError, match=r"not found in .*empty.*leave --data.init_args.root unset") as err:
        FashionMNISTDataModule(root=str(tmp_path / "empty")).prepare_data()
    assert FASHION_MNIST_DEBIAN in str(err.value)
    FashionMNISTDataModule().prepare_data()  # no root: the system copy


@pytest.mark.parametrize("epochs", ["1", "0"])
def test_a_run_without_phi_steps_warns_and_presents_no_architecture(tmp_path, capsys, epochs):
    """max_epochs <= warmup_epochs (the quick way to "try it"): no phi-step runs, so no genotype is a result."""
    args = tiny_args(tmp_path, "--trainer.max_epochs", epochs, "--model.init_args.warmup_epochs", "1")
    with pytest.warns(UserWarning, match="no phi-step will run"):
        proc = _run(args, capsys)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(tmp_path.rglob("genotype.json")), "an untouched phi was written as a result"
    for summary in tmp_path.rglob("summary.json"):
        assert json.loads(summary.read_text())["genotype"] is None


def test_testing_a_search_config_says_what_to_run_instead(tmp_path, capsys):
    args = ["test", *tiny_args(tmp_path / "run")[1:]]
    _assert_stopped_cleanly(_run(args, capsys), "a SearchModule has no test_step", tmp_path / "run")


def test_a_genotype_with_empty_cells_is_refused():
    from unas_lightning.genotypes import genotype_from_dict

    with pytest.raises(ValueError, match="normal cell has no nodes"):
        genotype_from_dict({"space": "darts", "normal": [], "reduce": []})


def _bad_genotypes(tmp_path) -> dict[str, tuple[str, str]]:
    good = load_genotype("UNAS_CIFAR10").to_dict()
    unknown_op = json.loads(json.dumps(good))
    unknown_op["normal"][0]["ops"][0] = "conv_9x9"
    bad_input = json.loads(json.dumps(good))
    bad_input["reduce"][1]["inputs"][1] = 7
    cases = {
        "unknown op": (unknown_op, "unknown operation 'conv_9x9'"),
        "input out of range": (bad_input, "input index 7 out of range"),
        "ProxylessNAS genotype in a DARTS network": (
            load_genotype("UNAS_PROXYLESS").to_dict(),
            "network 'cifar' does not fit a ProxylessNAS-space genotype",
        ),
    }
    out = {}
    for name, (genotype, message) in cases.items():
        path = tmp_path / "inputs" / f"{name.replace(' ', '_')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(genotype))
        out[name] = (str(path), message)
    return out


@pytest.mark.parametrize("case", ["unknown op", "input out of range", "ProxylessNAS genotype in a DARTS network"])
def test_genotype_that_does_not_fit_the_space_stops_early(tmp_path, case, capsys):
    path, message = _bad_genotypes(tmp_path)[case]
    run = tmp_path / "run"
    args = [
        "fit", "--config", QUICK_RETRAIN, "--model.init_args.genotype", path, "--model.init_args.network", "cifar",
        "--trainer.default_root_dir", str(run),
    ]  # fmt: skip
    _assert_stopped_cleanly(_run(args, capsys), message, run)


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_checkpoint_from_another_search_space_is_refused_before_anything_is_written(tmp_path, capsys):
    other = tmp_path / "other"  # a real search over a smaller space (2 nodes per cell) writes the checkpoint
    done = _run(tiny_args(other, "--model.init_args.space.init_args.nodes", "2", "--trainer.max_epochs", "1"), capsys)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = next(other.rglob("last.ckpt"))
    run = tmp_path / "run"
    proc = _run(tiny_args(run, "--ckpt_path", str(ckpt)), capsys)  # the quickstart space: 4 nodes per cell
    _assert_stopped_cleanly(proc, "does not fit this model", run)
    assert "it was written by a DartsSpace search" in proc.stderr and "This run is a DartsSpace search" in proc.stderr


def test_missing_checkpoint_file_is_reported(tmp_path, capsys):
    run = tmp_path / "run"
    proc = _run(tiny_args(run, "--ckpt_path", str(tmp_path / "nope.ckpt")), capsys)
    _assert_stopped_cleanly(proc, "nope.ckpt not found", run)
