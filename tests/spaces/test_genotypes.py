"""Published genotypes: every one builds its evaluation network, runs forward/backward, round-trips JSON."""

from __future__ import annotations

import json

import pytest
import torch

from unas_lightning.genotypes import genotype_from_dict, load_genotype, published
from unas_lightning.spaces import DartsSpace, ProxylessNet
from unas_lightning.spaces.darts import DartsNetworkCIFAR, DartsNetworkImageNet
from unas_lightning.utils.network_size import count_parameters

DARTS_NAMES = ["DARTS_V1", "DARTS_V2", "UNAS_CIFAR10", "UNAS_CIFAR100", "UNAS_IMAGENET"]
PROXYLESS_NAMES = ["PROXYLESS_GPU", "UNAS_PROXYLESS"]


def test_all_published_genotypes_are_shipped():
    assert set(DARTS_NAMES + PROXYLESS_NAMES) <= set(published())


@pytest.mark.parametrize("name", DARTS_NAMES + PROXYLESS_NAMES)
def test_published_genotype_builds_runs_and_round_trips(name, tmp_path):
    genotype = load_genotype(name)
    path = genotype.save(tmp_path / f"{name}.json")
    assert load_genotype(path) == genotype == genotype_from_dict(json.loads(path.read_text()))
    torch.manual_seed(0)
    if genotype.space_name == "darts":
        DartsSpace(ops="imagenet" if name == "UNAS_IMAGENET" else "paper").arch_of(genotype)  # fits the space
        net = DartsNetworkCIFAR(genotype, in_channels=1, channels=8, layers=5)
        net.drop_path_prob = 0.2
        logits, aux = net.train()(torch.randn(2, 1, 28, 28))
        assert aux.shape == logits.shape == (2, 10)
        (logits.sum() + 0.4 * aux.sum()).backward()
    else:
        assert genotype.space_name == "proxyless"
        net = ProxylessNet(genotype, in_channels=3, num_classes=10)
        net(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_parameter_counts_match_the_literature():
    """Within 2% of the published figures (DARTS paper Table 1/3, ProxylessNAS paper)."""
    v2 = load_genotype("DARTS_V2")
    assert count_parameters(DartsNetworkCIFAR(v2)) / 1e6 == pytest.approx(3.3, rel=0.02)
    assert count_parameters(DartsNetworkImageNet(v2)) / 1e6 == pytest.approx(4.7, rel=0.02)
    gpu = ProxylessNet(load_genotype("PROXYLESS_GPU"))
    assert sum(p.numel() for p in gpu.parameters()) / 1e6 == pytest.approx(7.1, rel=0.02)


def test_imagenet_network_runs_at_224():
    net = DartsNetworkImageNet(load_genotype("UNAS_IMAGENET"), channels=16, layers=5).eval()
    assert net(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"space": "darts", "normal": [{"inputs": [0, 7], "ops": ["skip_connect", "sep_conv_3x3"]}] * 4},
            "out of range",
        ),
        (
            {"space": "darts", "normal": [{"inputs": [0, 1], "ops": ["conv_9x9", "sep_conv_3x3"]}] * 4},
            "unknown operation",
        ),
        ({"space": "darts", "normal": [{"inputs": [0, 1], "ops": ["skip_connect"]}] * 4}, "exactly two"),
        ({"space": "proxyless", "ops": ["skip"] * 21}, "cannot be skipped"),
        ({"space": "nasbench", "ops": []}, "unknown space"),
    ],
)
def test_malformed_genotypes_are_rejected_with_a_clear_message(bad, message, tmp_path):
    if bad.get("space") == "darts":
        bad = {**bad, "reduce": bad["normal"]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=message):
        genotype = load_genotype(path)
        DartsSpace().arch_of(genotype)  # a DARTS genotype is checked against the space


def test_unknown_genotype_name_lists_the_published_ones():
    with pytest.raises(FileNotFoundError, match="UNAS_CIFAR10"):
        load_genotype("UNAS_CIFAR11")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["UNAS_CIFAR10", "UNAS_PROXYLESS"])
def test_drawings_are_written_by_the_documented_command(name, tmp_path, monkeypatch, capsys):
    """``python -m unas_lightning.analysis.visualize genotype.json``, run as ``-m`` runs it (runpy, in this process:
    no interpreter to start)."""
    import runpy
    import sys

    from conftest import ROOT

    genotype = load_genotype(name).save(tmp_path / "genotype.json")
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["visualize", str(genotype)])
    runpy.run_module("unas_lightning.analysis.visualize", run_name="__main__", alter_sys=True)
    assert {str(p) for p in tmp_path.glob("*.png")} <= set(capsys.readouterr().out.split())  # it names its files
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    expected = ["genotype_normal.png", "genotype_reduce.png"] if name.startswith("UNAS_C") else ["genotype_network.png"]
    assert written == expected
    assert all((tmp_path / f).stat().st_size > 5000 for f in written)


def test_cell_dot_has_two_labelled_inputs_per_node_and_feeds_the_output():
    from unas_lightning.spaces.darts.drawing import cell_dot

    genotype = load_genotype("DARTS_V2")
    dot = cell_dot(genotype, "normal")
    edges = [line for line in dot.splitlines() if "->" in line and "label=" in line]
    assert len(edges) == 2 * len(genotype.nodes("normal"))
    assert '"0" -> "3" [label="dil_conv_3x3"];' in dot  # DARTS_V2's last normal node reads node 0
    assert dot.count('-> "c_{k}"') == len(genotype.nodes("normal"))


def test_atomically_written_files_get_the_usual_mode(tmp_path):
    """genotype.json and summary.json are written through a private temporary file; the result is 0666 - umask."""
    import os
    import stat

    from unas_lightning.utils.files import write_text_atomic

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "genotype.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
