"""Estimator contract and statistical tests against exact gradients (enumeration of every z).

The toy problem has three categorical rows (3, 4 and 4 categories: 48 architectures) and a loss that
is non-linear in the rows, so relaxations are biased. Seeds are fixed; unbiased estimators must have
every coordinate of the mean of N single-sample estimates within 4.5 standard errors of the exact
gradient (|z| < 4.5: a false alarm for an unbiased estimator has probability < 1e-4 over the 11
coordinates); biased ones must be detected by a wide margin (|z| > 10 or a 10% deterministic error).
N is 1,500-3,000 single-sample estimates (or their equivalent in variance): enough to detect a bias of
about a tenth of one estimate's standard deviation, in a few seconds per test;
``benchmarks/estimator_variance.py`` measures their variance at larger N.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from unas_lightning.arch_loss import WithRelaxed, as_arch_loss
from unas_lightning.estimators import (
    Estimator,
    EstimatorOutput,
    GumbelSoftmax,
    IndeCateR,
    Rebar,
    Reinforce,
    ReinMax,
    Relax,
    Softmax,
    StraightThroughGumbel,
    UnorderedSet,
)
from unas_lightning.estimators._relax_control import LinearControl
from unas_lightning.estimators.testing import exact_gradient, sample_gradients, z_scores

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # tiny tensors: see conftest

SHAPES = {"a": (3,), "b": (2, 4)}


def toy_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = {k: 0.7 * torch.randn(s, generator=g) for k, s in SHAPES.items()}
    w = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}

    def loss_fn(arch):
        s = sum((w[k] * arch[k]).sum() for k in arch)
        return (s - 0.3) ** 2 + torch.sin(3 * (arch["a"][0] * arch["b"][1].sum() + arch["b"][0, 2]))

    return logits, loss_fn


def lookup_table_loss(seed: int = 1):
    """A non-differentiable loss: a table indexed by the chosen categories (Python ints)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.rand(3, 4, 4, generator=g).tolist()

    def loss_fn(arch):
        i = int(arch["a"].argmax())
        j, k = (int(t) for t in arch["b"].argmax(-1))
        return torch.tensor(table[i][j][k])

    return loss_fn


ALL = [Softmax, GumbelSoftmax, Reinforce, Rebar, Relax, IndeCateR, UnorderedSet, StraightThroughGumbel, ReinMax]


@pytest.mark.parametrize("cls", ALL)
def test_contract(cls):
    est = cls()  # every estimator builds with no arguments
    assert isinstance(est, Estimator)
    logits, loss_fn = toy_problem()
    leaves = {k: v.clone().requires_grad_(True) for k, v in logits.items()}
    out = est.surrogate(leaves, loss_fn)
    assert isinstance(out, EstimatorOutput)
    assert out.loss.dim() == 0 and out.value.dim() == 0 and not out.value.requires_grad
    for k, v in leaves.items():
        assert out.arch[k].shape == v.shape
        assert torch.equal(out.arch[k].sum(-1), torch.ones(v.shape[:-1]))
    out.loss.backward()
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in leaves.values())


@pytest.mark.parametrize(
    "est",
    [
        Reinforce(),
        Reinforce(use_baseline=False),
        Reinforce(num_samples=4),
        Rebar(),
        Rebar(temperature=1.0, eta=0.5),
        Rebar(num_samples=3),
        Rebar(conditional="coupled"),
        IndeCateR(),
    ],
    ids=[
        "reinforce",
        "reinforce-no-baseline",
        "rloo-4",
        "rebar",
        "rebar-tau1-eta0.5",
        "rebar-loo-3",
        "rebar-coupled",
        "indecater",
    ],
)
@pytest.mark.statistical
def test_unbiased_estimators_match_exact_gradient(est):
    torch.manual_seed(10)
    logits, loss_fn = toy_problem()
    exact = exact_gradient(logits, loss_fn)
    # an estimate averaging K samples has about 1/K of the variance: 3000 / K of them give the test the power
    # of 3000 single-sample estimates (a bias of 0.08 standard deviations of one estimate is detected)
    samples = sample_gradients(est, logits, loss_fn, n=3000 // getattr(est, "num_samples", 1))
    z = z_scores(samples, exact)
    assert z.abs().max() < 4.5, f"bias detected: z-scores {z.tolist()}"


@pytest.mark.statistical
def test_rebar_with_a_cheaper_relaxed_loss_stays_unbiased():
    """A loss's ``relaxed()`` (e.g. the loss on a sub-batch) replaces c = L in REBAR: any c is unbiased."""
    torch.manual_seed(11)
    logits, loss_fn = toy_problem()
    exact = exact_gradient(logits, loss_fn)

    def cheaper(arch):  # correlated with loss_fn but a different function, as a sub-batch loss would be
        return 0.8 * loss_fn(arch) + 0.1 * (arch["a"] * torch.tensor([1.0, -1.0, 0.5])).sum()

    samples = sample_gradients(Rebar(), logits, WithRelaxed(loss_fn, cheaper), n=2000)
    z = z_scores(samples, exact)
    assert z.abs().max() < 4.5, f"bias detected: z-scores {z.tolist()}"
    fixed = sample_gradients(Rebar(), logits, loss_fn, n=2000)
    assert not torch.allclose(samples.var(0), fixed.var(0)), "the relaxed loss was ignored"


@pytest.mark.slow
def test_reinforce_needs_only_values_of_a_non_differentiable_loss():
    torch.manual_seed(11)
    logits, _ = toy_problem()
    loss_fn = lookup_table_loss()
    exact = exact_gradient(logits, loss_fn)
    z = z_scores(sample_gradients(Reinforce(), logits, loss_fn, n=6000), exact)
    assert z.abs().max() < 4.5


@pytest.mark.statistical
def test_gumbel_softmax_is_detected_as_biased():
    torch.manual_seed(12)
    logits, loss_fn = toy_problem()
    exact = exact_gradient(logits, loss_fn)
    z = z_scores(sample_gradients(GumbelSoftmax(), logits, loss_fn, n=6000), exact)
    assert z.abs().max() > 10, f"the test lacks power: z-scores {z.tolist()}"


@pytest.mark.statistical
def test_reinmax_is_exact_to_second_order_and_straight_through_is_biased():
    """One categorical row, L a function of w . z: ReinMax's mean matches the exact gradient for a linear and a
    quadratic L (its Heun step is exact to second order) and is detected as biased for sin(5 w . z);
    straight-through Gumbel is biased already for the linear L."""
    torch.manual_seed(3)
    logits = {"op": 0.8 * torch.randn(4)}
    w = torch.randn(4)
    linear = lambda a: (w * a["op"]).sum()
    quadratic = lambda a: (w * a["op"]).sum() ** 2 + a["op"][0] * a["op"][1]
    wavy = lambda a: torch.sin(5 * (w * a["op"]).sum())
    for make, loss_fn, unbiased in [
        (ReinMax, linear, True),
        (ReinMax, quadratic, True),
        (ReinMax, wavy, False),
        (StraightThroughGumbel, linear, False),
    ]:
        z = z_scores(sample_gradients(make(), logits, loss_fn, n=3000), exact_gradient(logits, loss_fn)).abs().max()
        assert (z < 4.5) if unbiased else (z > 10), (make.__name__, float(z))


def test_unordered_set_probabilities_sum_to_one_over_all_sets():
    """P(S) over every k-subset of a small distribution sums to 1 (also with mass excluded and renormalized)."""
    import itertools

    from unas_lightning.estimators.unordered_set import set_probability

    p = torch.softmax(torch.randn(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 0)
    for k in (1, 2, 3):
        total = sum(set_probability(p[list(s)]) for s in itertools.combinations(range(6), k))
        assert float(total) == pytest.approx(1.0, abs=1e-12)
    rest = [1, 2, 3, 4, 5]
    total = sum(set_probability(p[list(s)], excluded=float(p[0])) for s in itertools.combinations(rest, 2))
    assert float(total) == pytest.approx(1.0, abs=1e-12)


def test_unordered_set_draws_distinct_architectures_even_in_the_darts_space():
    from unas_lightning.spaces import DartsSpace

    space = DartsSpace(channels=4, layers=3)  # 10^19-odd architectures: never enumerated
    for logits in (toy_problem()[0], {k: torch.randn_like(v) for k, v in space.arch.items()}):
        seen = []
        leaves = {k: v.clone().requires_grad_(True) for k, v in logits.items()}

        def loss_fn(arch, seen=seen):
            seen.append(tuple(torch.cat([a.reshape(-1) for a in arch.values()]).tolist()))
            return torch.tensor(float(len(seen)))

        UnorderedSet(num_samples=4).surrogate(leaves, loss_fn).loss.backward()
        assert len(seen) == len(set(seen)) == 4
        assert all(torch.isfinite(v.grad).all() for v in leaves.values())
        assert sum(float(v.grad.abs().sum()) for v in leaves.values()) > 0  # rows all 4 agree on get 0, as RLOO
    with pytest.raises(ValueError, match="from 2 to 8"):
        UnorderedSet(num_samples=1)


@pytest.mark.statistical
def test_stochastic_beam_search_draws_sets_with_their_without_replacement_probabilities():
    """Every unordered set of 3 among 2 x 3 = 9 architectures, drawn 10,000 times: each set's frequency
    matches its exact probability (Plackett-Luce over the enumerated joint) within 4.5 standard errors."""
    from unas_lightning.estimators.unordered_set import set_probability, stochastic_beam_search

    rows = [torch.log_softmax(torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64), -1)] * 2
    rows = [rows[0], torch.log_softmax(torch.tensor([0.5, -0.5, 0.2], dtype=torch.float64), -1)]
    joint = (rows[0][:, None] + rows[1][None, :]).exp().reshape(-1)
    g, n, counts = torch.Generator().manual_seed(0), 10_000, {}
    for _ in range(n):
        choices, log_p = stochastic_beam_search(rows, 3, g)
        key = tuple(sorted(3 * a + b for a, b in choices.tolist()))
        assert torch.allclose(log_p.exp(), joint[list(3 * a + b for a, b in choices.tolist())])
        counts[key] = counts.get(key, 0) + 1
    sets = list(itertools.combinations(range(9), 3))
    exact = torch.stack([set_probability(joint[list(s)]) for s in sets])
    assert float(exact.sum()) == pytest.approx(1.0, abs=1e-12)
    freq = torch.tensor([counts.get(s, 0) / n for s in sets], dtype=torch.float64)
    se = (exact * (1 - exact) / n).sqrt()
    assert ((freq - exact).abs() / se).max() < 4.5


@pytest.mark.statistical
def test_softmax_relaxation_is_detected_as_biased():
    logits, loss_fn = toy_problem()
    exact = exact_gradient(logits, loss_fn)
    samples = sample_gradients(Softmax(), logits, loss_fn, n=3)
    assert torch.allclose(samples[0], samples[1])  # deterministic
    rel_err = (samples[0] - exact).norm() / exact.norm()
    assert rel_err > 0.1, f"relative error {rel_err:.3f}"


def test_reinforce_baseline_tracks_the_loss_and_is_saved():
    est = Reinforce(baseline_decay=0.5)
    logits = {"a": torch.zeros(3, requires_grad=True)}
    for _ in range(20):
        est.surrogate(logits, lambda arch: torch.tensor(2.0))
    assert torch.isclose(est.baseline, torch.tensor(2.0))
    assert {"baseline", "baseline_ready"} <= set(est.state_dict())


@pytest.mark.parametrize("bad", [{"temperature": 0.0}, {"temperature": -1}])
def test_bad_settings_are_rejected(bad):
    with pytest.raises(ValueError, match="temperature"):
        Rebar(**bad)
    with pytest.raises(ValueError, match="baseline_decay"):
        Reinforce(baseline_decay=1.0)


def test_non_scalar_loss_is_rejected_with_a_hint():
    logits = {"a": torch.zeros(3, requires_grad=True)}
    with pytest.raises(ValueError, match="scalar"):
        Rebar().surrogate(logits, lambda arch: arch["a"] * 2)


def _wrong_surrogate():
    g = LinearControl({k: s for k, s in SHAPES.items()})
    with torch.no_grad():
        for w in g.weight.values():
            w.copy_(-5 * torch.arange(w.numel(), dtype=torch.float32).reshape(w.shape))
    return g


@pytest.mark.parametrize(
    "make",
    [
        lambda: Relax(),  # g fitted by regression
        lambda: Relax(fit="none"),  # zero g
        lambda: Relax(control=_wrong_surrogate(), fit="none"),  # a deliberately wrong g
        lambda: Relax(fit="both", self_tuning=True),
    ],
    ids=["relax-regression", "relax-zero-g", "relax-wrong-g", "relax-variance-tuned"],
)
@pytest.mark.statistical
def test_relax_is_unbiased_on_a_lookup_table_for_any_g(make):
    torch.manual_seed(13)
    logits, _ = toy_problem()
    loss_fn = lookup_table_loss()
    exact = exact_gradient(logits, loss_fn)
    z = z_scores(sample_gradients(make(), logits, loss_fn, n=2000), exact)
    assert z.abs().max() < 4.5, f"bias detected: z-scores {z.tolist()}"


@pytest.mark.statistical
def test_self_tuning_rebar_stays_unbiased_while_its_temperature_moves():
    torch.manual_seed(14)
    logits, loss_fn = toy_problem()
    est = Rebar(self_tuning=True)
    exact = exact_gradient(logits, loss_fn)
    z = z_scores(sample_gradients(est, logits, loss_fn, n=2000), exact)
    assert abs(float(est.temperature.detach()) - 0.4) > 0.05, "the temperature did not move"
    assert z.abs().max() < 4.5, f"bias detected: z-scores {z.tolist()}"
    assert "_extra_state" in "".join(est.state_dict())  # the tuning optimizer travels in checkpoints


@pytest.mark.parametrize(
    "make",
    [lambda: Reinforce(num_samples=4), IndeCateR, lambda: Relax(num_samples=3)],
    ids=["rloo", "indecater", "relax-loo"],
)
@pytest.mark.statistical
def test_black_box_multi_evaluation_estimators_are_unbiased_on_a_lookup_table(make):
    torch.manual_seed(15)
    logits, _ = toy_problem()
    loss_fn = lookup_table_loss()
    exact = exact_gradient(logits, loss_fn)
    est = make()  # the power of 3000 single-sample estimates, as in test_unbiased_estimators_match_exact_gradient
    z = z_scores(sample_gradients(est, logits, loss_fn, n=3000 // getattr(est, "num_samples", 1)), exact)
    assert z.abs().max() < 4.5, f"bias detected: z-scores {z.tolist()}"


@pytest.mark.statistical
def test_unordered_set_estimator_is_unbiased_on_a_lookup_table():
    """k = 3 distinct architectures per estimate (the step costs more Python than RLOO's: fewer estimates)."""
    torch.manual_seed(15)
    logits, _ = toy_problem()
    loss_fn = lookup_table_loss()
    exact = exact_gradient(logits, loss_fn)
    z = z_scores(sample_gradients(UnorderedSet(num_samples=3), logits, loss_fn, n=1500), exact)
    assert z.abs().max() < 4.5, f"bias detected: z-scores {z.tolist()}"


@pytest.mark.statistical
def test_indecater_costs_one_plus_sum_of_k_minus_one_evaluations_and_beats_reinforce():
    logits, loss_fn = toy_problem()
    calls = []

    def counted(arch):
        calls.append(1)
        return loss_fn(arch)

    IndeCateR().surrogate({k: v.clone().requires_grad_(True) for k, v in logits.items()}, counted)
    assert len(calls) == 1 + (3 - 1) + 2 * (4 - 1)
    torch.manual_seed(16)
    var_i = sample_gradients(IndeCateR(), logits, loss_fn, n=500).var(0).sum()
    var_r = sample_gradients(Reinforce(num_samples=len(calls)), logits, loss_fn, n=500).var(0).sum()
    assert var_i < var_r  # at equal evaluations (9 each)


# -- per-example architectures: B examples, each scored with its own z_b -----------------------------
B = 3


def per_example_problem(seed: int = 2):
    """B per-example losses l_b(z) (differentiable in relaxed rows); objective mean_b E[l_b(z)]."""
    g = torch.Generator().manual_seed(seed)
    logits = {k: 0.7 * torch.randn(s, generator=g) for k, s in SHAPES.items()}
    w = {k: torch.randn(B, *s, generator=g) for k, s in SHAPES.items()}

    def batched(arch):  # arch rows [B, ...] -> [B]
        s = sum((w[k] * arch[k]).reshape(B, -1).sum(1) for k in arch)
        return (s - 0.3) ** 2 + torch.sin(3 * (arch["a"][:, 0] * arch["b"][:, 1].sum(-1) + arch["b"][:, 0, 2]))

    def averaged(arch):  # the objective for one shared architecture (for the exact gradient)
        return batched({k: v.expand(B, *v.shape) for k, v in arch.items()}).mean()

    return logits, batched, averaged


def per_example_gradients(est, logits, loss_fn, n):
    phi = {k: v.detach().clone().requires_grad_(True) for k, v in logits.items()}
    out = []
    for _ in range(n):
        for v in phi.values():
            v.grad = None
        expanded = {k: v.expand(B, *v.shape) for k, v in phi.items()}
        result = est.surrogate(expanded, loss_fn)
        assert result.arch["a"].shape == (B, 3) and result.value.dim() == 0
        result.loss.backward()
        out.append(torch.cat([v.grad.reshape(-1) for v in phi.values()]))
    return torch.stack(out)


@pytest.mark.parametrize(
    "make",
    [Reinforce, lambda: Reinforce(num_samples=3), Rebar, lambda: Rebar(self_tuning=True), Relax, IndeCateR],
    ids=["reinforce", "rloo", "rebar", "rebar-self-tuning", "relax", "indecater"],
)
@pytest.mark.statistical
def test_per_example_architecture_samples_are_unbiased(make):
    torch.manual_seed(17)
    logits, batched, averaged = per_example_problem()
    exact = exact_gradient(logits, averaged)
    z = z_scores(per_example_gradients(make(), logits, batched, n=1500), exact)
    assert z.abs().max() < 4.5, f"bias detected: z-scores {z.tolist()}"


def test_per_example_losses_must_match_the_logits_batch():
    logits = {"a": torch.zeros(4, 3, requires_grad=True)}
    with pytest.raises(ValueError, match="per-example"):
        Reinforce().surrogate(logits, lambda arch: torch.zeros(5))


def test_linear_parts_match_the_definition_and_its_gradients_in_eta_and_tau():
    """g_hat = (u + eta v + beta w) / k equals the estimate written from its definition, with
    leave-one-out baselines of the residuals f - eta c~ that keep their dependence on eta and tau: so
    the gradients of sum(g_hat^2) that self-tuning follows are those of the estimator's variance. The
    fixed estimator's one-backward scalar has the same gradient."""
    from unas_lightning.estimators._cv_estimate import draw, linear_parts, surrogate_loss
    from unas_lightning.estimators._leave_one_out import leave_one_out

    logits, loss_fn = toy_problem()
    loss = as_arch_loss(loss_fn)
    for k in (1, 3):
        phi = [v.clone().requires_grad_(True) for v in logits.values()]
        leaves = dict(zip(logits, phi, strict=True))
        eta, beta = torch.tensor(0.7, requires_grad=True), torch.tensor(0.2, requires_grad=True)
        log_tau = torch.tensor(0.4).log().requires_grad_(True)
        torch.manual_seed(18)
        s = draw(leaves, loss, loss, k, log_tau.exp(), coupled=False)
        # the definition: [f_i - eta c~_i - b_i] d log p_i + eta (d c(zeta_i) - d c(zeta~_i)), averaged
        residual = s.f - eta * s.c_tilde
        coef = residual - (leave_one_out(residual) if k > 1 else beta)
        reparam = torch.autograd.grad(s.c_diff.sum(), phi, create_graph=True)  # c(zeta) - c(zeta~), two passes
        by_definition = [eta * r for r in reparam]
        for i in range(k):
            d_log_p = torch.autograd.grad(s.log_p[i].sum(), phi, retain_graph=True)
            by_definition = [g + coef[i].reshape(()) * d for g, d in zip(by_definition, d_log_p, strict=True)]
        by_definition = [g / k for g in by_definition]
        u, v, w = linear_parts(s, phi, create_graph=True)
        linear = [(a + eta * b + beta * c) / k for a, b, c in zip(u, v, w, strict=True)]
        for a, b in zip(linear, by_definition, strict=True):
            torch.testing.assert_close(a, b)
        params = [eta, log_tau] + ([beta] if k == 1 else [])
        want = torch.autograd.grad(sum((g**2).sum() for g in by_definition), params, retain_graph=True)
        got = torch.autograd.grad(sum((g**2).sum() for g in linear), params, retain_graph=True)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
        one_backward = torch.autograd.grad(surrogate_loss(s, 0.7, 0.2), phi, retain_graph=True)
        for a, b in zip(one_backward, linear, strict=True):  # the fixed estimator's scalar form
            torch.testing.assert_close(a, b.detach())
        u0, v0, w0 = linear_parts(s, phi)  # first order: the same vectors, no graph to theta
        for a, b in zip(u0 + v0 + w0, u + v + w, strict=True):
            torch.testing.assert_close(a, b.detach())


@pytest.mark.statistical
def test_closed_form_self_tuning_rebar_is_unbiased_and_lowers_variance():
    torch.manual_seed(19)
    logits, loss_fn = toy_problem()
    est = Rebar(self_tuning=True, tune_temperature=False)
    assert "log_temperature" not in dict(est.named_parameters())
    exact = exact_gradient(logits, loss_fn)
    samples = sample_gradients(est, logits, loss_fn, n=2000)
    assert z_scores(samples, exact).abs().max() < 4.5
    assert abs(float(est.eta.detach()) - 1.0) > 0.05 and abs(float(est.beta.detach())) > 0.05
    torch.manual_seed(19)
    fixed = sample_gradients(Rebar(), logits, loss_fn, n=2000)
    assert samples[1000:].var(0).sum() < fixed[1000:].var(0).sum()


@pytest.mark.parametrize("tune_temperature", [False, True], ids=["closed-form", "variance-objective"])
def test_a_nan_loss_does_not_corrupt_the_self_tuned_state(tune_temperature):
    """The search skips a phi-step with a NaN loss; the estimator's own tuning step is skipped too."""
    logits, loss_fn = toy_problem()
    logits = {k: v.requires_grad_(True) for k, v in logits.items()}
    est = Rebar(self_tuning=True, tune_temperature=tune_temperature, tune_lr=0.05)
    est.prepare(logits)
    torch.manual_seed(3)
    for _ in range(3):
        est.surrogate(logits, loss_fn)
    before = {k: v.detach().clone() for k, v in est.state_dict().items() if torch.is_tensor(v)}
    est.surrogate(logits, lambda arch: loss_fn(arch) * float("nan"))
    after = {k: v.detach() for k, v in est.state_dict().items() if torch.is_tensor(v)}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())
    est.surrogate(logits, loss_fn)  # and it goes on tuning
    assert not torch.equal(est.eta.detach(), before["eta"])


@pytest.mark.parametrize("tune_temperature", [False, True], ids=["closed-form", "variance-objective"])
def test_self_tuning_works_with_float64_logits(tune_temperature):
    """The tuned state (float32) follows gradients computed from float64 logits (a dtype error before)."""
    logits, loss_fn = toy_problem()
    leaves = {k: v.double().requires_grad_(True) for k, v in logits.items()}
    est = Rebar(self_tuning=True, tune_temperature=tune_temperature, tune_lr=0.05)
    torch.manual_seed(5)
    for _ in range(3):
        est.surrogate(leaves, lambda arch: loss_fn({k: v.float() for k, v in arch.items()}).double()).loss.backward()
    assert all(v.grad.dtype == torch.float64 and torch.isfinite(v.grad).all() for v in leaves.values())
    assert est.eta.dtype == torch.float32 and float(est.eta.detach()) != 1.0


def test_coupled_control_variate_is_one_evaluation_with_both_gradients():
    """The coupled zeta~ equals zeta in value; one evaluation of c at coupled_point gives c(zeta~) and the
    phi-gradient of c(zeta) - c(zeta~) and the temperature-gradient of c(zeta~), as two evaluations do."""
    from unas_lightning.distributions import ArchDistribution
    from unas_lightning.estimators._cv_estimate import coupled_point

    logits, loss_fn = toy_problem()
    phi = {k: v.clone().requires_grad_(True) for k, v in logits.items()}
    tau = torch.tensor(0.4, requires_grad=True)
    torch.manual_seed(21)
    dist = ArchDistribution(phi)
    for _ in range(5):
        s = dist.rsample(tau)
        zeta_tilde = dist.coupled_conditional_rsample(s, tau)
        assert all(torch.allclose(zeta_tilde[k], s.zeta[k]) for k in s.zeta)
        at_zeta, at_tilde = loss_fn(s.zeta), loss_fn(zeta_tilde)
        one = loss_fn(coupled_point(s, zeta_tilde, tau))
        torch.testing.assert_close(one, at_tilde)
        want = torch.autograd.grad(at_zeta - at_tilde, list(phi.values()), retain_graph=True)
        got = torch.autograd.grad(one - one.detach(), list(phi.values()), retain_graph=True)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
        assert not torch.allclose(torch.cat([w.reshape(-1) for w in want]), torch.zeros(11)), "a trivial difference"
        d_tau = torch.autograd.grad(one, tau, retain_graph=True)[0]
        torch.testing.assert_close(d_tau, torch.autograd.grad(at_tilde, tau, retain_graph=True)[0])


@pytest.mark.statistical
@pytest.mark.parametrize("conditional", ["coupled", "independent"])
def test_relax_is_unbiased_with_either_conditional_sample(conditional):
    torch.manual_seed(23)
    logits, _ = toy_problem()
    loss_fn = lookup_table_loss()
    exact = exact_gradient(logits, loss_fn)
    z = z_scores(sample_gradients(Relax(conditional=conditional), logits, loss_fn, n=2000), exact)
    assert z.abs().max() < 4.5, f"bias detected: z-scores {z.tolist()}"


@pytest.mark.statistical
def test_coupled_conditional_noise_is_exp1_given_the_sample():
    """E' of the coupled draw is i.i.d. Exp(1) given z (memorylessness): per chosen category, its mean,
    variance and P(E' > 1) = 1/e on 20,000 draws (tolerances: 5 standard errors)."""
    from unas_lightning.distributions import ArchDistribution

    torch.manual_seed(24)
    dist = ArchDistribution({"a": torch.tensor([1.5, 0.0, -1.0, -3.0])})
    draws = [dist.rsample(1.0) for _ in range(20000)]
    noise = torch.stack([dist.coupled_noise(s)["a"].exp() for s in draws])  # [N, 4]
    chosen = torch.stack([s.z["a"].argmax() for s in draws])
    for k in range(3):  # categories drawn often enough
        e = noise[chosen == k]
        se = 1 / e.shape[0] ** 0.5
        assert (e.mean(0) - 1).abs().max() < 5 * se, (k, e.mean(0))
        assert (e.var(0) - 1).abs().max() < 5 * 2.9 * se, (k, e.var(0))
        assert ((e > 1).float().mean(0) - math.exp(-1)).abs().max() < 5 * 0.49 * se


@pytest.mark.parametrize("make", [StraightThroughGumbel, ReinMax, GumbelSoftmax, Softmax, Reinforce, Rebar, Relax])
def test_every_estimator_steps_phi_on_a_sampled_nb201_cell_whose_output_is_zero(make):
    """A NAS-Bench-201 cell whose every edge is "none" outputs zeros: no operation depends on the rows. The
    straight-through estimators' loss then had no graph to phi and the search crashed in its phi-step
    ("element 0 of tensors does not require grad", GDAS and ReinMax on nb201_fmnist.yaml); now every
    estimator returns a loss whose backward runs, with finite gradients."""
    from unas_lightning.spaces import NB201Space

    torch.manual_seed(0)
    space = NB201Space(in_channels=1, num_classes=10, channels=4, cells_per_stage=1)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    none_first = torch.full_like(space.arch["cell"], -30.0)
    none_first[..., 0] = 30.0  # "none" on every edge, all but surely
    logits = {"cell": none_first.requires_grad_(True)}

    def loss_fn(arch):
        return torch.nn.functional.cross_entropy(space(x, arch), y)

    out = make().surrogate(logits, loss_fn)
    out.loss.backward()
    grad = logits["cell"].grad
    assert grad is not None and torch.isfinite(grad).all()
