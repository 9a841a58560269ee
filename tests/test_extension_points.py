"""One place per extension: a space and a cost defined outside the package work from the CLI, and the
package's own structure keeps it so (layering, no dispatch on concrete spaces, nothing cited from outside)."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUICKSTART, ROOT, run_cli

from unas_lightning.analysis.visualize import main as visualize_main
from unas_lightning.cli.app import main as cli_main

PACKAGE = ROOT / "unas_lightning"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    """The ``unas_lightning`` modules a file imports (at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unas_lightning"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("unas_lightning"))
    return found


#: what each floor may import (besides itself): the ground floor, then estimators | spaces, then costs,
#: then the search's own modules; callbacks, retraining, the CLI on top
FLOORS = {
    "ground": ["unas_lightning.distributions", "unas_lightning.arch_loss", "unas_lightning.utils"],
    "estimators": ["unas_lightning.estimators"],
    "spaces": ["unas_lightning.spaces"],
    "costs": ["unas_lightning.costs"],
}  # fmt: skip
MAY_IMPORT = {
    "ground": {"ground"},
    "estimators": {"ground", "estimators"},
    "spaces": {"ground", "spaces"},
    "costs": {"ground", "estimators", "spaces", "costs"},
}


def _floor(module: str) -> str | None:
    for floor, prefixes in FLOORS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return floor
    return None


def test_layers_never_import_upward():
    """Distributions and small utilities at the bottom; estimators and spaces above them, never importing
    each other; costs above both; nothing of those imports the search, callbacks, retraining or the CLI."""
    problems = []
    for name, path in _modules().items():
        floor = _floor(name)
        if floor is None:
            continue
        for imported in _imports(path):
            if _floor(imported) not in MAY_IMPORT[floor]:
                problems.append(f"{name} ({floor}) imports {imported}")
    assert not problems, "\n".join(problems)


def test_nothing_dispatches_on_a_concrete_space_or_genotype_outside_its_own_package():
    import unas_lightning.spaces as spaces
    from unas_lightning.spaces import Genotype, SearchSpace

    concrete = {}
    for base in (SearchSpace, Genotype):
        for cls in base.__subclasses__():
            if cls.__module__.startswith("unas_lightning.spaces."):
                concrete[cls.__name__] = cls.__module__.rsplit(".", 1)[0]  # its package
    assert {"DartsSpace", "ProxylessSpace", "DartsGenotype", "ProxylessGenotype"} <= set(concrete), concrete
    assert {"darts", "proxyless"} <= set(spaces.registered_spaces())
    problems = []
    for name, path in _modules().items():
        text = path.read_text()
        for cls, package in concrete.items():
            if name.startswith(package):
                continue
            if re.search(rf"isinstance\([^)]*\b{cls}\b", text):
                problems.append(f"{name}: isinstance on {cls}")
    assert not problems, problems
    search = ast.parse((PACKAGE / "search" / "module.py").read_text())
    imported = [(n.module or "", a.name) for n in ast.walk(search) if isinstance(n, ast.ImportFrom) for a in n.names]
    assert not [i for i in imported if "latency" in f"{i[0]}.{i[1]}".lower()], (
        f"search.py imports latency code: {imported}"
    )


def test_the_project_cites_nothing_outside_the_repository():
    pattern = re.compile(r"shared/|DESIGN\.md|Contract [0-9]")
    cited = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text())]
    assert not cited, cited


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_a_space_defined_outside_the_package_runs_search_retrain_visualize_and_summary(tmp_path, capsys):
    """examples/custom_space.py by class_path: search -> genotype.json -> retrain -> visualize -> summary.json."""
    tiny = [
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
        "--data.init_args.max_train_examples", "256", "--data.init_args.batch_size", "16",
    ]  # fmt: skip
    search = tmp_path / "search"
    proc = run_cli([  # a process of its own: nothing of the test's imports helps it find the space
        "fit", "--config", str(QUICKSTART), "--config", str(ROOT / "examples/custom_space.yaml"), *tiny,
        "--model.init_args.warmup_epochs", "1",
        "--trainer.default_root_dir", str(search),
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    genotype_path = next(search.rglob("genotype.json"))
    genotype = json.loads(genotype_path.read_text())
    assert genotype["space"] == "chain" and genotype["type"] == "custom_space.ChainGenotype"
    assert len(genotype["ops"]) == 4
    summary = json.loads(next(search.rglob("summary.json")).read_text())
    assert summary["genotype"] == genotype and summary["search_network"]["network"] == "ChainNet"
    assert summary["search_network"]["parameters"] > 0

    # retraining and drawing in this process: the genotype file names its type, which is imported from it
    sys.path.insert(0, str(ROOT / "examples"))  # as PYTHONPATH=examples does
    try:
        retrain = tmp_path / "retrain"
        cli_main([
            "fit", "--config", str(ROOT / "configs/retrain/quick_fmnist.yaml"), *tiny[:-4],
            "--model.init_args.genotype", str(genotype_path),
            "--trainer.default_root_dir", str(retrain),
        ])  # fmt: skip
        state = torch.load(next(retrain.rglob("last.ckpt")), weights_only=True)["state_dict"]
        assert {k.split(".")[1] for k in state if k.startswith("net.")} == {"stem", "layers", "head"}  # a ChainNet
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            visualize_main([str(genotype_path)])
        assert stop.value.code == 2 and "'chain' space has no drawing" in capsys.readouterr().err
    finally:
        sys.path.remove(str(ROOT / "examples"))

    # no package file names the space
    named = [
        p for p in PACKAGE.rglob("*.py") if re.search(r"ChainSpace|ChainGenotype|custom_space\.[A-Z]", p.read_text())
    ]
    assert not named, named
