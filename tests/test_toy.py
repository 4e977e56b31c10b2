"""saesteer.toy: the "Sparse but Wrong" toy generator matches SEED_METHODS.md section 2 (firing
probabilities, magnitudes, orthonormal directions, true L0 about 11) and is deterministic by seed."""

from __future__ import annotations

import pytest
import torch

from saesteer.toy import D_MODEL, N_FEATURES, firing_probabilities, toy_activations, toy_features


@pytest.fixture(scope="module")
def big():
    return toy_features(200_000)


def test_firing_probabilities_are_the_spec():
    p = firing_probabilities()
    assert p.shape == (50,)
    for i in (0, 7, 25, 49):
        assert p[i].item() == pytest.approx(0.345 * (49 - i) / 50 + 0.05, abs=1e-15)
    assert p[0].item() == pytest.approx(0.3881) and p[49].item() == pytest.approx(0.05)


def test_firing_rates_within_tolerance(big):
    f, _ = big
    rates = (f > 0).double().mean(0)
    p = firing_probabilities()
    # binomial standard error at 200k samples is at most ~0.0011; 5 sigma, plus the copula's exact marginals
    torch.testing.assert_close(rates, p, atol=0.006, rtol=0)
    assert abs(float((f > 0).double().sum(1).mean()) - float(p.sum())) < 0.05  # E[L0] = sum p_i = 10.98


def test_magnitudes_are_relu_of_one_plus_gaussian(big):
    f, _ = big
    on = f[f > 0].double()
    assert on.mean().item() == pytest.approx(1.0, abs=0.003)
    assert on.std().item() == pytest.approx(0.15, abs=0.003)


def test_firing_is_correlated(big):
    f, _ = big
    c = torch.corrcoef((f > 0).double().T)
    off = c[~torch.eye(N_FEATURES, dtype=torch.bool)]
    assert (off > 0.1).any() and (off < -0.05).any()  # positive and negative pairs exist
    assert (off.abs() < 0.02).float().mean() > 0.1  # and uncorrelated ones


def test_directions_orthonormal_and_true_l0():
    x, D, l0 = toy_activations(20_000)
    assert x.shape == (20_000, D_MODEL) and D.shape == (N_FEATURES, D_MODEL)
    torch.testing.assert_close(D @ D.T, torch.eye(N_FEATURES), atol=1e-6, rtol=0)
    assert 10.7 < l0 < 11.3
    f, D2 = toy_features(20_000)
    assert torch.equal(D, D2)
    torch.testing.assert_close(x, f @ D, atol=1e-5, rtol=0)


def test_deterministic_by_seed():
    a = toy_activations(3000)
    b = toy_activations(3000)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    c = toy_activations(3000, seed=7)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    held = toy_activations(3000, sample_seed=7)  # same model, other samples
    assert torch.equal(held[1], a[1]) and not torch.equal(held[0], a[0])


def test_recovery_and_steerability_of_the_true_dictionary():
    """An SAE whose decoder IS the true dictionary and whose codes ARE the true features: everything is
    recovered, every edit lands on its feature, erasure removes all of it, nothing spills."""
    from saesteer.toy import recovery, steerability

    f, D = toy_features(4096)
    assert recovery(D, D) == {"true_max_cos": pytest.approx(1.0), "recovered": 1.0}
    s = steerability(D, f, f, D)
    assert s["on_target_share"] == pytest.approx(1.0) and s["steerable"] == 1.0
    assert s["erased"] == pytest.approx(1.0, abs=1e-5) and s["spill"] == pytest.approx(0.0, abs=1e-5)


def test_steerability_sees_absorption_and_mixed_rows():
    from saesteer.toy import recovery, steerability

    f, D = toy_features(4096)
    codes = f.clone()
    on0 = (f[:, 0] > 0).nonzero().squeeze(1)
    codes[on0[: len(on0) // 2], 0] = 0.0  # latent 0 fires on only half of feature 0's samples
    s = steerability(D, codes, f, D)
    assert s["erased"] == pytest.approx((49 + 0.5) / 50, abs=0.01)  # feature 0 half erased, the rest fully
    W = D.clone()
    W[0] = torch.nn.functional.normalize(D[0] + D[1], dim=0)  # row 0 mixes features 0 and 1 equally
    s = steerability(W, f, f, D)
    assert s["on_target_share"] == pytest.approx((49 + 0.5) / 50, abs=1e-4)
    assert s["steerable"] == pytest.approx(49 / 50)
    assert s["spill"] == pytest.approx(1.0 / 50, abs=1e-4)  # feature 0's edit moves feature 1 as much
    assert recovery(W, D)["true_max_cos"] == pytest.approx((49 + 0.5 ** 0.5) / 50, abs=1e-5)
