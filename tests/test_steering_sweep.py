"""Steering strength, calibrated (saesteer.eval.steering): the choice rule, the measurements a sweep
reports, its EditSet and chart, and ``saesteer generate --clamp F=auto``. Tiny random models only."""

from __future__ import annotations

import json
import math
import statistics
import xml.etree.ElementTree as ET

import pytest
import torch

import saesteer
from saesteer.eval.steering import (KINDS, SweepPoint, SweepResult, _encode, choose, point_edit,
                                    steering_sweep)
from saesteer.labels import FeatureLabels
from test_demo_parts import BatchTokenizer
from tiny import random_sae, tiny_lm

SVG = "{http://www.w3.org/2000/svg}"
PROMPTS = ("Tell me something interesting.", "Hi.", "What should I cook tonight?")


@pytest.fixture(scope="module")
def sm():
    return saesteer.wrap(tiny_lm("llama"), random_sae(d_sae=64), layer=1, tokenizer=BatchTokenizer())


@pytest.fixture(scope="module")
def sweep(sm):
    """The sweep of the first of the three features firing most on the first prompt (position 0 left
    out) whose sweep finds a setting within budget: on a random model steering a feature need not
    raise it on the output."""
    enc, n = _encode(sm.tokenizer, PROMPTS[:1], False)
    fa = sm.features(**enc, top_k=64)
    total = torch.zeros(64)
    total.index_add_(0, fa.indices[0, 1:].reshape(-1), fa.values[0, 1:].reshape(-1))
    for f in total.argsort(descending=True)[:3].tolist():
        res = steering_sweep(sm, f, prompts=PROMPTS, strengths=(0.01, 1.0, 4.0, 16.0), max_new_tokens=6,
                             score=len, progress=False)
        if res.chosen is not None:
            return res
    raise AssertionError("no feature found whose sweep chooses a setting")


@pytest.fixture(scope="module")
def feature(sweep):
    return sweep.feature


def pt(kind, strength, concept, ppl, kl=0.0):
    return SweepPoint(kind, strength, strength * 2, concept, None, ppl, kl, ())


def test_choose_rule_on_hand_made_points():
    base = pt("none", 0.0, 0.1, 10.0)
    pts = [pt("clamp", 1, 1.0, 12.0), pt("clamp", 2, 3.0, 15.0), pt("clamp", 4, 9.0, 15.01),  # 15.01 > 1.5 x 10
           pt("add", 1, 3.0, 14.0), pt("add", 2, float("nan"), 11.0), pt("add", 4, 50.0, float("nan"))]
    assert choose(pts, base, 1.5) is pts[3]  # concept 3.0 twice: the lower perplexity wins
    assert choose(pts, base, 1.502) is pts[2]
    assert choose(pts[1:2], base, 1.5) is pts[1]  # the budget is inclusive: 15.0 <= 1.5 x 10
    assert choose(pts, base, 1.2) is pts[0]
    assert choose(pts, base, 1.0) is None  # every point costs perplexity
    fluent = [pt("clamp", 0.1, 0.1, 9.0), pt("add", 0.1, 0.05, 8.0)]  # as fluent as it gets, but no steering
    assert choose(fluent, base, 2.0) is None and choose(fluent + pts[:1], base, 2.0) is pts[0]
    assert choose([pt("clamp", 1, 2.0, 10.0), pt("add", 1, 2.0, 10.0)], base, 1.0).kind == "clamp"  # the earlier
    assert choose([], base, 2.0) is None
    assert choose(pts[:1], pt("none", 0, 0, float("nan")), 10.0) is None


def test_chosen_point_respects_the_budget(sweep):
    assert [p.kind for p in sweep.points] == [k for k in KINDS for _ in range(4)]
    c = sweep.chosen
    assert c is not None and c.perplexity <= sweep.budget * sweep.baseline.perplexity
    assert c is choose(sweep.points, sweep.baseline, sweep.budget)
    fits = [p for p in sweep.points if p.perplexity <= 1.5 * sweep.baseline.perplexity]
    assert c.concept > sweep.baseline.concept
    assert c.concept == max(p.concept for p in fits)
    es = sweep.edits()
    assert isinstance(es, saesteer.EditSet) and es.edits == (point_edit(c.kind, sweep.feature, c.value, sweep.hook),)
    # strengths are in units of the measured reference (no labels here); add_norm's alpha is rescaled
    assert sweep.reference_source == "measured" and sweep.reference > 0
    for p in sweep.points:
        if p.kind != "add_norm":
            assert p.value == pytest.approx(p.strength * sweep.reference)
        assert p.kl >= 0 and math.isfinite(p.kl) and len(p.samples) == 2
        assert isinstance(p.concept_external, float)  # score=len, averaged over the outputs
    assert sweep.baseline.kl == 0.0 and sweep.baseline.kind == "none" and sweep.baseline.strength == 0
    assert sweep.points[-1].kl > 0  # a strong add changes the next-token distributions
    d = json.loads(json.dumps(sweep.to_json()))
    assert d["points"][d["chosen"]]["kind"] == c.kind and len(d["points"]) == 16


def test_only_harmful_points_at_a_1x_budget_choose_nothing(sm, feature):
    res = steering_sweep(sm, feature, prompts=PROMPTS, strengths=(4.0, 16.0), kinds=("clamp", "add"),
                         max_new_tokens=6, budget=1.0, progress=False)
    assert all(p.perplexity > res.baseline.perplexity for p in res.points)  # every setting costs fluency
    assert res.chosen is None and res.to_json()["chosen"] is None
    with pytest.raises(saesteer.EditError, match="within 1x"):
        res.edits()
    ET.fromstring(res.svg())  # nothing chosen still draws


def test_baseline_concept_is_the_features_activation_on_unsteered_output(sm, feature, sweep):
    """One prompt at a time, no padding: generate unsteered, read the feature with features()."""
    tok = sm.tokenizer
    means, ext = [], []
    for p in PROMPTS:
        enc, n = _encode(tok, [p], False)
        out = sm.generate(**enc, max_new_tokens=6, do_sample=False)
        fa = sm.features(input_ids=out, top_k=64)
        vals = torch.where(fa.indices[0, n:] == feature, fa.values[0, n:], torch.zeros(())).sum(-1)
        means.append(float(vals.mean()))
        ext.append(len(tok.decode(out[0, n:].tolist(), skip_special_tokens=True).strip()))
    assert max(means) > 0  # the feature fires on the unsteered output, so the check means something
    assert sweep.baseline.concept == pytest.approx(statistics.fmean(means), abs=1e-5)
    assert sweep.baseline.concept_external == pytest.approx(statistics.fmean(ext))


def test_reference_comes_from_the_labels_when_there_are_some(feature):
    sm = saesteer.wrap(tiny_lm("llama"), random_sae(d_sae=64), layer=1, tokenizer=BatchTokenizer())
    sm.sae.labels = FeatureLabels([{"feature": feature, "max_activation": 2.5}])
    res = steering_sweep(sm, feature, prompts=PROMPTS[:2], strengths=(0.5, 2.0), kinds=("clamp_generated",),
                         max_new_tokens=3, progress=False)
    assert (res.reference, res.reference_source) == (2.5, "labels")
    assert [p.value for p in res.points] == [1.25, 5.0]
    with pytest.raises(saesteer.EditError):
        steering_sweep(sm, 64, prompts=PROMPTS[:1], progress=False)  # no such feature
    with pytest.raises(saesteer.EditError, match="unknown sweep kind"):
        steering_sweep(sm, feature, kinds=("teleport",), progress=False)


def test_svg_is_well_formed_with_one_polyline_per_kind(sweep):
    for x in ("ppl", "strength"):
        root = ET.fromstring(sweep.svg(x=x))
        assert root.tag == SVG + "svg"
        assert len(root.findall(f"{SVG}polyline")) == len(KINDS)
        assert len(root.findall(f"{SVG}circle")) == len(sweep.points) + 1  # + the ring round the chosen one
        text = "".join(root.itertext())
        assert "chosen" in text and all(k in text for k in KINDS)
        assert ("budget 1.5x" in text) == (x == "ppl")
    lines = [p for p in sweep.points if p.kind == "add"]
    hand = SweepResult(sweep.feature, sweep.hook, sweep.baseline, lines, 1.5, None)
    root = ET.fromstring(hand.svg())
    assert len(root.findall(f"{SVG}polyline")) == 1 and "nothing within budget" in "".join(root.itertext())


def test_generate_clamp_auto(tmp_path, capsys):
    """``saesteer generate --clamp F=auto`` runs the small sweep, prints its choice, then steers with it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from saesteer.cli import main

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3,
             **{w: 4 + i for i, w in enumerate("the sea is a calm blue deep tell me about".split())}}
    tk = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>").save_pretrained(tmp_path / "lm")
    tiny_lm("llama").save_pretrained(tmp_path / "lm")
    sae = random_sae(d_sae=64)
    sae.cfg.hook_name = "blocks.1.hook_resid_post"
    saesteer.save_sae(sae, tmp_path / "sae")
    args = ["generate", "tell me about the sea", "--model", str(tmp_path / "lm"), "--sae", str(tmp_path / "sae"),
            "--max-new-tokens", "4"]
    assert main(args + ["--clamp", "7=auto:100"]) == 0
    out = capsys.readouterr().out
    assert "auto     : feature 7: clamp" in out and "x, budget 100x)" in out and "Clamp(feature=7" in out
    assert "--- steered ---" in out
    assert main(args + ["--clamp", "7=auto:0.01"]) == 2  # nothing fits: said so, nothing generated
    cap = capsys.readouterr()
    assert "nothing within 0.01x" in cap.out and "--- steered ---" not in cap.out and "within 0.01x" in cap.err
    assert main(args + ["--clamp", "x=auto"]) == 2
    assert "FEATURE=auto" in capsys.readouterr().err
    assert main(args + ["--clamp", "64=auto"]) == 2  # out of range: refused before the model loads
