"""saesteer.explain: delphi's sampling and scorers on hand cases, the SAGE-style loop's control flow with
a scripted LLM, the explanations file beside the SAE, and a smoke test on the embedded SmolLM2."""

from __future__ import annotations

import json
import math
import re

import pytest

from saesteer.explain.examples import Example, Split, delphi_split, quantile_sample
from saesteer.explain.explainers import clean_explanation, one_shot, sage_loop
from saesteer.explain.scorers import Judged, auc, detection, fuzz_texts, fuzzing, parse_labels, scores


def ex(words, acts):
    return Example(tuple(words), tuple(float(a) for a in acts))


class ScriptedLLM:
    """A deterministic stand-in: answers 1 to a scoring prompt iff the (single) text holds ``word``
    (detection) or a highlighted span holds it (fuzzing); explains with ``explanations`` in turn."""

    name = "scripted"

    def __init__(self, word="cat", explanations=("animals", "the word cat", "cats"), probs=False):
        self.word, self.explanations, self.probs, self.calls, self.prompts = word, list(explanations), probs, 0, []

    def _answer(self, messages):
        user = messages[-1]["content"]
        texts = re.findall(r"Text \d+: (.*)", user)
        fuzz = "highlighted" in messages[0]["content"]
        pattern = user.split("\n")[0]
        hit = []
        for t in texts:
            spans = re.findall(r"<<(.*?)>>", t) if fuzz else [t]
            hit.append(int(any(self.word in s for s in spans) and "cat" in pattern))
        return hit

    def chat(self, messages, *, max_tokens=256, temperature=0.0):
        self.calls += 1
        self.prompts.append(messages[-1]["content"])
        user = messages[-1]["content"]
        if user.startswith("Pattern:"):
            return str(self._answer(messages))
        if user.startswith("Write"):
            hyp = user.split("contain: ")[1].split(". One per line")[0]
            return "\n".join(f"{hyp} sentence {i}" for i in range(4))
        return "Explanation: " + (self.explanations.pop(0) if len(self.explanations) > 1 else self.explanations[0])

    def choice_probs(self, messages, choices):
        if not self.probs:
            return None
        self.calls += 1
        y = self._answer(messages)[0]
        return {"0": 0.2 if y else 0.7, "1": 0.8 if y else 0.3}


def cat_split(n=20):
    on = [ex(["the", " cat", " sat", " down"], [0, 5.0 + i, 1.0, 0]) for i in range(n)]
    off = [ex(["a", " dog", " ran", " off"], [0, 0, 0, 0]) for _ in range(n)]
    return Split(on[: n // 2], on[n // 2:], off[: n // 2], n, tuple(off[n // 2:]))


def test_scores_on_a_hand_case():
    j = [Judged(1, 1, 0.9, ""), Judged(1, 0, 0.4, ""), Judged(1, None, 0.6, ""), Judged(0, 0, 0.1, ""),
         Judged(0, 1, 0.6, "")]
    s = scores(j)
    # TP 1 of P 3, TN 1 of N 2, FP 1; the unparsable one counts as wrong
    assert s["balanced_accuracy"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3)) and s["failed"] == 1
    # AUC: positives 0.9, 0.4, 0.6 vs negatives 0.1, 0.6: wins 2 + 1 + (1 + 0.5) = 4.5 of 6
    assert s["auc"] == pytest.approx(4.5 / 6) and auc([1, 0], [0.5, 0.5]) == 0.5
    assert math.isnan(auc([1, 1], [0.2, 0.3]))


def test_parse_labels():
    assert parse_labels("[1, 0, 1]", 3) == [1, 0, 1]
    assert parse_labels("Answer: 1", 1) == [1]
    assert parse_labels("[1, 0]", 3) is None and parse_labels("0.5", 1) is None


def test_quantile_sampling_and_the_split_are_stratified_and_disjoint():
    acts = [ex(["x"], [a]) for a in range(1, 101)]
    s = quantile_sample(acts, 10, 10, seed=22)
    assert sorted(int(e.max_act - 1) // 10 for e in s) == list(range(10))  # one per decile
    assert [e.max_act for e in s] == [e.max_act for e in quantile_sample(acts, 10, 10, seed=22)]
    neg = [ex(["y"], [0]) for _ in range(80)]
    sp = delphi_split(acts, neg, n_train=20, n_test=30, n_negative=50, n_train_negative=10)
    assert len(sp.train) == 20 and len(sp.test) == 30 and not {id(e) for e in sp.train} & {id(e) for e in sp.test}
    assert len(sp.negatives) == 50 and len(sp.train_negatives) == 10
    assert not {id(e) for e in sp.negatives} & {id(e) for e in sp.train_negatives}


def test_fuzzing_highlights_as_delphi():
    on = [ex(["a", "b", "c", "d"], [0, 10, 2, 3]), ex(["e", "f", "g", "h"], [0, 0, 4, 0])]
    off = [ex(["p", "q", "r", "s", "t", "u", "v", "w"], [0] * 8)]
    a, b = fuzz_texts(Split([], on, off, 2))
    # threshold 0.3 x 10 = 3: "b" and "d" in the first, "g" in the second; mean 1.5 -> 2 tokens in negatives
    assert a == ["a<<b>>c<<d>>", "efgh".replace("g", "<<g>>")]
    assert b[0].count("<<") in (1, 2) and sum(ch.isalpha() for ch in re.findall(r"<<(.*?)>>", b[0])[0]) >= 1
    assert "<<v>>" in b[0] or "<<uv>>" in b[0] or "<<vw>>" in b[0]  # position 8 - 8 // 4 = 6 is "v"


def test_detection_and_fuzzing_discriminate_a_right_from_a_wrong_explanation():
    sp = cat_split()
    llm = ScriptedLLM()
    right, wrong = detection(llm, "the word cat", sp), detection(llm, "weather", sp)
    assert right.scores["balanced_accuracy"] == 1.0 and wrong.scores["balanced_accuracy"] == 0.5
    assert fuzzing(llm, "the word cat", sp).scores["balanced_accuracy"] == 1.0
    assert llm.calls == 20 + 20 + 20  # one example shown at a time, 10 + 10 each
    batched = detection(ScriptedLLM(), "the word cat", sp, n_shown=5).scores
    assert batched["balanced_accuracy"] == 1.0 and batched["n"] == 20
    p = detection(ScriptedLLM(probs=True), "the word cat", sp).scores
    assert p["auc"] == 1.0 and p["balanced_accuracy"] == 1.0


def test_one_shot_shows_highlighted_examples_and_cleans_the_answer():
    llm = ScriptedLLM(explanations=("cats",))
    assert one_shot(llm, cat_split()) == "cats"
    assert "<< cat>>" in llm.prompts[0]
    assert clean_explanation('Explanation: "the word cat"\nmore') == "the word cat"
    assert clean_explanation("1. dogs") == "dogs"


def test_sage_loop_keeps_the_best_hypothesis_refines_and_stops():
    sp = cat_split()
    llm = ScriptedLLM(explanations=("animals", "weather", "the word cat", "cats and more cats"))

    def probe(texts):
        return [3.0 if "cat" in t else 0.0 for t in texts]

    steps = []
    res = sage_loop(llm, sp, probe, n_hypotheses=2, held_in=5, max_calls=200, max_rounds=3, patience=1, log=steps.append)
    # proposals "animals" (probes miss, detection 0.5) and "weather"; the refinement "the word cat" wins,
    # the next refinement does not improve: stop
    assert [s.hypothesis for s in steps] == ["animals", "weather", "the word cat", "cats and more cats"]
    assert [s.decision for s in steps] == ["best so far", "rejected", "best so far", "rejected"]
    assert res.explanation == "the word cat" and res.stopped == "no improvement"
    assert steps[2].generative == 1.0 and steps[2].predictive == 1.0 and res.score == 1.0
    assert res.calls == llm.calls
    json.dumps(res.to_json())
    small = sage_loop(ScriptedLLM(), sp, probe, n_hypotheses=3, held_in=5, max_calls=13)
    assert small.calls <= 13 and small.stopped == "budget" and len(small.steps) == 1


def test_explanations_file_beside_the_sae_feeds_labels_search_and_show(tmp_path, capsys):
    import saesteer
    from saesteer.cli import main
    from saesteer.explain import store
    from tiny import random_sae

    folder = tmp_path / "sae"
    saesteer.save_sae(random_sae(32, 64, "relu"), folder)
    store.save(folder, {3: {"oneshot": {"explanation": "ship names", "detection": {"balanced_accuracy": 0.8},
                                        "fuzzing": {"balanced_accuracy": 0.7}},
                            "sage": {"explanation": "sailing words", "detection": {"balanced_accuracy": 0.6},
                                     "fuzzing": {"balanced_accuracy": 0.6}}}}, {"llm": "scripted"})
    sae = saesteer.load_sae(folder)
    assert sae.labels[3] == "ship names" and sae.labels.search("ship")[0].feature == 3
    assert main(["features", "--sae", str(folder), "--show", "3"]) == 0
    out = capsys.readouterr().out
    assert "ship names" in out and "detection 0.80" in out and "method oneshot" in out
    # what the demo shows: the explanation with its scores, the automatic label where none exists
    assert sae.labels.describe(3) == "ship names [detection 0.80, fuzzing 0.70]"
    from saesteer.demos.token_view import TokenFeatures, render_tokens

    page = render_tokens(TokenFeatures(["x"], [[(3, 1.0)]]), 3, sae.labels, scale=1.0)
    assert "ship names [detection 0.80, fuzzing 0.70]" in page
    from saesteer.labels import FeatureLabels

    plain = FeatureLabels([{"feature": 1, "label": "'sea' 'ship'"}])
    assert plain.describe(1) == "'sea' 'ship'"
    (folder / store.FILE).write_text('{"features": {"x": {}}}')
    with pytest.raises(saesteer.SaesteerError, match="not an integer"):
        saesteer.load_sae(folder)


def test_feature_windows_on_a_tiny_model():
    import saesteer
    from saesteer.explain.examples import feature_windows, max_activations
    from tiny import CharTokenizer, random_sae, tiny_lm

    sm = saesteer.wrap(tiny_lm("llama"), random_sae(32, 64, "relu"), hook="blocks.1.hook_resid_post",
                       tokenizer=CharTokenizer())
    w = feature_windows(sm, ["abcdefgh" * 20, "zyxwvuts" * 20], [0, 5], window=16, progress=False)
    on, off = w[0]
    assert len(on) + len(off) == 20 and all(len(e.tokens) == 16 and e.acts[0] == 0 for e in on + off)
    assert all(e.max_act > 0 for e in on) and all(e.max_act == 0 for e in off)
    m = max_activations(sm, 0, [on[0].text] if on else ["abcdefgh"])
    assert len(m) == 1 and m[0] >= 0


@pytest.mark.real
def test_saesteer_explain_runs_offline_on_the_bundled_default(tmp_path):
    """The CLI with SmolLM2 as explainer and scorer: one feature, the automatic label and a one-shot
    explanation, each scored on 10 + 10 windows of the repo's README (the corpus may not be built)."""
    from pathlib import Path

    import saesteer
    from saesteer.cli import main
    from saesteer.embedded import default_sae_path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    texts = tmp_path / "t.txt"
    texts.write_text(" ".join(readme.read_text().split()))
    feature = saesteer.load_sae(default_sae_path()).labels.search("device")[0].feature
    out = tmp_path / "ex"
    assert main(["explain", "--features", str(feature), "--methods", "label,oneshot", "--texts", str(texts),
                 "--min-examples", "5", "--max-windows", "240", "--test-examples", "10", "--out", str(out),
                 "--quiet"]) == 0
    data = json.loads((out / "feature_explanations.json").read_text())
    rec = data["features"][str(feature)]
    assert data["meta"]["llm"] == "SmolLM2-135M-Instruct" and "skipped" not in rec, rec
    for m in ("label", "oneshot"):
        s = rec[m]["detection"]
        assert s["n"] == 20 and 0 <= s["balanced_accuracy"] <= 1 and 0 <= s["auc"] <= 1
        assert rec[m]["fuzzing"]["n"] == 20 and rec[m]["explanation"]


def test_explain_features_limit_keeps_the_first_features_with_enough_examples():
    import random as rnd

    import saesteer
    from saesteer.explain.run import explain_features
    from tiny import CharTokenizer, random_sae, tiny_lm

    sm = saesteer.wrap(tiny_lm("llama"), random_sae(32, 64, "relu"), hook="blocks.1.hook_resid_post",
                       tokenizer=CharTokenizer())
    r = rnd.Random(0)
    texts = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(400)) for _ in range(8)]
    kw = dict(methods=("oneshot",), min_examples=2, max_windows=100, n_test=2, progress=False)
    every = ScriptedLLM()
    full = explain_features(sm, every, texts, list(range(64)), **kw)
    done = sorted(f for f, rec in full.items() if "skipped" not in rec)
    assert len(done) >= 3, "the fixture needs features with enough examples"
    llm = ScriptedLLM()
    cut = explain_features(sm, llm, texts, list(range(64)), limit=2, **kw)
    assert sorted(f for f, rec in cut.items() if "skipped" not in rec) == done[:2]
    assert all(f < done[1] for f, rec in cut.items() if "skipped" in rec)
    assert 0 < llm.calls < every.calls  # the features past the limit cost no LLM call
    assert cut[done[0]]["n_activating"] == full[done[0]]["n_activating"]
