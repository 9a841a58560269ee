"""Sampling from p_phi: exactness, numerics and the conditional relaxation r(zeta | z)."""

from __future__ import annotations

import math

import pytest
import torch

from unas_lightning.distributions import ArchDistribution, check_temperature

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # tiny tensors: see conftest

EULER_GAMMA = 0.5772156649015329


@pytest.mark.statistical
def test_samples_are_exactly_one_hot_and_log_prob_matches_categorical():
    torch.manual_seed(0)
    logits = {"a": torch.randn(3, 5), "b": torch.randn(4)}
    d = ArchDistribution(logits)
    s = d.rsample(0.5)
    for k, v in logits.items():
        assert s.z[k].shape == v.shape and s.zeta[k].shape == v.shape
        assert torch.equal(s.z[k].sum(-1), torch.ones(v.shape[:-1]))
        assert set(s.z[k].unique().tolist()) <= {0.0, 1.0}
        assert torch.allclose(s.zeta[k].sum(-1), torch.ones(v.shape[:-1]))
    expected = sum(
        torch.distributions.Categorical(logits=v).log_prob(s.z[k].argmax(-1)).sum() for k, v in logits.items()
    )
    assert torch.allclose(d.log_prob(s.z), expected)
    ent = torch.cat([torch.distributions.Categorical(logits=v).entropy().reshape(-1) for v in logits.values()])
    assert torch.allclose(d.entropy(), ent.mean())


@pytest.mark.statistical
def test_extreme_float32_logits_stay_finite_and_frequencies_match_softmax():
    """logits 10*N(0,1) in float32: all samples finite; argmax frequencies within 5 binomial SEs."""
    gen = torch.Generator().manual_seed(1)
    row = 10 * torch.randn(6, generator=gen)
    n = 200_000
    logits = {"row": row.expand(n, 6).clone()}
    d = ArchDistribution(logits)
    torch.manual_seed(2)
    s = d.rsample(0.4)
    zt = d.conditional_rsample(s.z, 0.4)
    for t in (s.z["row"], s.zeta["row"], s.b["row"], zt["row"]):
        assert torch.isfinite(t).all()
    # the conditional sample agrees with z: argmax zeta~ = argmax z
    assert torch.equal(zt["row"].argmax(-1), s.z["row"].argmax(-1))
    p = torch.softmax(row.double(), -1)
    freq = s.z["row"].double().mean(0)
    se = (p * (1 - p) / n).sqrt().clamp_min(1.0 / n)
    assert ((freq - p).abs() / se).max() < 5.0


def test_many_rows_of_extreme_logits_are_finite():
    torch.manual_seed(3)
    logits = {"x": 10 * torch.randn(5000, 7)}
    d = ArchDistribution(logits)
    for _ in range(20):
        s = d.rsample(0.1)
        zt = d.conditional_rsample(s.z, 0.1)
        assert torch.isfinite(s.zeta["x"]).all() and torch.isfinite(zt["x"]).all()


@pytest.mark.statistical
def test_rare_category_keeps_its_probability():
    """A category with p = 1e-4 wins ~1e-4 of draws; clamping uniforms to [1e-3, 1-1e-3] would give 0."""
    p_rare = 1e-4
    logits = torch.log(torch.tensor([p_rare, 1 - p_rare]))
    n = 2_000_000
    torch.manual_seed(4)
    z = ArchDistribution({"r": logits.expand(n, 2)}).sample()["r"]
    count = z[:, 0].sum().item()
    assert abs(count - n * p_rare) < 5 * math.sqrt(n * p_rare)


@pytest.mark.statistical
def test_conditional_relaxation_has_the_marginal_of_the_gumbel_scores():
    """If z ~ p and b~ ~ p(b | argmax b = z), then b~_k ~ Gumbel(log p_k): mean log p_k + gamma."""
    torch.manual_seed(5)
    logits = torch.tensor([1.5, -0.5, 0.0, -3.0])
    n = 400_000
    d = ArchDistribution({"r": logits.expand(n, 4)})
    z = d.sample()
    b_tilde = d.conditional_scores(z)["r"].double()
    expected = torch.log_softmax(logits.double(), -1) + EULER_GAMMA
    se = math.pi / math.sqrt(6) / math.sqrt(n)
    assert ((b_tilde.mean(0) - expected).abs() / se).max() < 5.0
    assert ((b_tilde.var(0) - math.pi**2 / 6).abs() < 0.03).all()


def test_gradients_flow_into_logits():
    logits = {"a": torch.zeros(2, 3, requires_grad=True)}
    d = ArchDistribution(logits)
    s = d.rsample(1.0)
    zt = d.conditional_rsample(s.z, 1.0)
    (s.zeta["a"][:, 0].sum() + zt["a"][:, 1].sum() + d.log_prob(s.z)).backward()
    assert logits["a"].grad is not None and logits["a"].grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "0.4", True])
def test_bad_temperature_is_rejected(bad):
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        check_temperature(bad)
