"""benchmarks/estimator_variance.py --quick: every part runs, and its tables say what the full run says."""

from __future__ import annotations

import pytest
from conftest import benchmark, markdown_table

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # tiny tensors: see conftest

UNBIASED = ("Reinforce", "RLOO", "Rebar", "Relax", "IndeCateR")


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_mnist_available")
def test_estimator_benchmark_quick_flags_the_relaxations_and_not_the_unbiased(capsys):
    benchmark("estimator_variance").main(["--quick"])
    out = capsys.readouterr().out

    toy = markdown_table(out, "### 4 variables x 5 categories")
    assert len(toy) == 14, sorted(toy)
    z = {name: float(cells[1]) for name, cells in toy.items() if not cells[1].startswith("det.")}
    # 200 estimates: every unbiased estimator inside the band, the relaxation far outside (~54 at 4000)
    assert all(z[name] < 4.5 for name in z if name.startswith(UNBIASED)), z
    assert z["GumbelSoftmax (tau=1)"] > 4.5 and z["StraightThroughGumbel (tau=1)"] > 4.5, z

    supernet = markdown_table(out, "## (b) DARTS supernet")
    assert set(supernet) == {
        "Reinforce, EMA baseline",
        "RLOO k=3",
        "Rebar (paper: tau=0.4, eta=1), coupled zeta~",
        "StraightThroughGumbel (biased)",
        "ReinMax (biased)",
        "GumbelSoftmax (biased)",
    }
    total = {name: float(cells[2]) for name, cells in supernet.items()}
    assert total["Reinforce, EMA baseline"] == 1.0 and total["GumbelSoftmax (biased)"] < 0.5, total

    optimization = markdown_table(out, "## (c) Optimizing")
    assert len(optimization) == 7 and optimization["exact gradient"][2] == "0 (exact)"
