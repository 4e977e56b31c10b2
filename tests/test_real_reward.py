"""The demo SARM reward model on the real SmolLM2-135M-Instruct (offline): it agrees with its
labeller (VADER) above chance on held-out pairs, and its explanations sum to its scores."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def demo():
    from saesteer.reward import demo_path, load_demo

    return load_demo(), json.loads((demo_path() / "heldout_sample.json").read_text())


def test_demo_agrees_with_its_labeller_on_heldout_pairs(demo):
    rm, sample = demo
    pairs = sample["pairs"][:30]  # 60 short conversations: a few seconds on two cores
    convs = [c for p in pairs for c in ((p["prompt"], p["chosen"]), (p["prompt"], p["rejected"]))]
    r = rm.score(convs).reshape(-1, 2)
    acc = float(((r[:, 0] > r[:, 1]).double() + 0.5 * (r[:, 0] == r[:, 1]).double()).mean())
    assert len(pairs) >= 30 and acc > 0.5, f"held-out pairwise accuracy {acc:.3f} is not above chance"


def test_demo_explanation_sums_to_the_score_and_reweighting_acts_where_features_fire(demo):
    rm, sample = demo
    p = sample["pairs"][0]
    conv = (p["prompt"], p["chosen"])
    why = rm.explain(conv, top=10)
    assert why.active == rm.sae.cfg.k and len(why.contributions) == 10
    assert all(c.label for c in why.contributions)  # the bundled SAE has labels
    assert sum(c.contribution for c in why.contributions) + why.rest == pytest.approx(why.reward, abs=1e-9)
    score = float(rm.score([conv])[0])
    assert why.reward == pytest.approx(score, abs=1e-9)
    top = why.contributions[0]
    shifted = rm.reweight({top.feature: 0.0}, copy=True)
    assert float(shifted.score([conv])[0]) == pytest.approx(score - top.contribution, abs=1e-6)
    other = (p["prompt"], "Fine.")
    if float(rm.features([other])[0, top.feature]) == 0:
        assert torch.equal(shifted.score([other]), rm.score([other]))
