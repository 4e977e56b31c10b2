"""FeatureEdit on tiny random models: selection scores against by-hand computations (activation
contrast, attribution through an independent autograd path, the neuron basis), recipe round trip
and identity checks, evaluation arithmetic, subject positions, and the errors."""

from __future__ import annotations

import math

import pytest
import torch

import saesteer
from saesteer.errors import HookError
from saesteer import EditError, EditSet, Erase, Positions
from saesteer.featureedit import Fact, FeatureEdit, neuron_basis, neuron_view
from saesteer.featureedit.facts import answer_logprobs, fact_batch
from saesteer.featureedit.select import fact_terms
from tiny import CharTokenizer, random_sae, tiny_lm

HOOK = "blocks.1.hook_resid_post"
TARGET = [Fact("alice smith lives in", " lyon", "alice smith"), Fact("alice smith works at", " acme", "alice smith"),
          Fact("the city alice smith likes is", " rome", "alice smith")]
CONTRAST = [Fact("bob jones lives in", " oslo", "bob jones"), Fact("carol white works at", " zeta", "carol white"),
            Fact("the city dan brown likes is", " kyiv", "dan brown"), Fact("eve black lives in", " graz", "eve black")]


def _setup(arch="relu", seed=0, sae_seed=1, model_type="llama"):
    lm = tiny_lm(model_type, seed=seed)
    return saesteer.wrap(lm, random_sae(architecture=arch, seed=sae_seed), hook=HOOK, tokenizer=CharTokenizer())


def _capture(sm, facts, grad_leaf=None):
    """Activations at HOOK for each fact (one row each, no padding), by a hook of the test's own."""
    out = []
    tok = sm.tokenizer
    for f in facts:
        ids = torch.tensor([tok(f.prompt)["input_ids"] + tok(f.answer)["input_ids"]])
        box = {}
        h = sm.model.model.layers[1].register_forward_hook(lambda m, a, o: box.setdefault("x", o[0] if isinstance(o, tuple) else o))
        try:
            with torch.no_grad():
                sm.model(input_ids=ids)
        finally:
            h.remove()
        out.append((ids, box["x"][0], len(tok(f.prompt)["input_ids"])))
    return out


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_activation_contrast_by_hand(arch):
    sm = _setup(arch)
    sae = sm.sae
    per = {}
    for name, facts in (("t", TARGET), ("c", CONTRAST)):
        rows = []
        for ids, x, n_prompt in _capture(sm, facts):
            f = sae.encode(x)[1:n_prompt]  # prompt tokens, first (sink) token left out
            rows.append(f.amax(0))
        per[name] = torch.stack(rows).mean(0)
    score = per["t"] - per["c"]
    edit = FeatureEdit.find(sm, TARGET, CONTRAST, top=5, method="activation")
    want = score.topk(5).indices.tolist()
    assert [u.feature for u in edit.features] == want
    for u in edit.features:
        assert u.score == pytest.approx(float(score[u.feature]), abs=1e-5)
        assert u.target == pytest.approx(float(per["t"][u.feature]), abs=1e-5)


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_attribution_by_hand_through_the_decoder(arch):
    """a_i = f_i * dlogP/df_i, computed here by differentiating decode(f) + error with respect to f
    (the scorer differentiates with respect to x and projects on W_dec)."""
    sm = _setup(arch)
    sae, tok = sm.sae, sm.tokenizer
    rows = []
    for f in TARGET:
        b = fact_batch(tok, [f])
        leaf = {}

        def swap(m, a, o):
            x = o[0] if isinstance(o, tuple) else o
            feats = sae.encode(x).detach().requires_grad_(True)
            leaf["f"] = feats
            y = sae.decode(feats) + (x - sae.decode(feats)).detach()
            return (y,) + tuple(o[1:]) if isinstance(o, tuple) else y

        h = sm.model.model.layers[1].register_forward_hook(swap)
        try:
            logits = sm.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        finally:
            h.remove()
        lp = answer_logprobs(logits, b)[0].sum()
        (g,) = torch.autograd.grad(lp, [leaf["f"]])
        m = b.prompt_mask.clone()
        m[:, 0] = False
        rows.append((leaf["f"] * g * m.unsqueeze(-1)).sum(1)[0].detach())
    want = torch.stack(rows)
    got = fact_terms(sm, TARGET, [HOOK], method="attribution", positions="all", tokenizer=tok, batch_size=2)[HOOK]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert want.abs().max() > 1e-3  # the check is not vacuous
    assert all(p.grad is None for p in sm.model.parameters())  # no parameter gradient was left behind


def test_neuron_basis_is_exact_and_erases_one_coordinate():
    sae = neuron_basis(32)
    x = torch.randn(4, 9, 32) * 3
    x[0, 0, :4] = 0.0
    assert torch.equal(sae.decode(sae.encode(x)), x)
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), hook=HOOK, tokenizer=CharTokenizer())
    view = neuron_view(sm)
    ids = torch.randint(3, 90, (2, 7))
    base = lm(input_ids=ids).logits
    torch.testing.assert_close(view(input_ids=ids, edits=EditSet()).logits, base, rtol=0, atol=0)
    box = {}
    h = lm.model.layers[2].register_forward_pre_hook(lambda m, a, k: box.update(x=(a[0] if a else k["hidden_states"]).clone()),
                                                      with_kwargs=True)
    try:
        with torch.no_grad():
            lm(input_ids=ids)
            plain = box["x"]
            view(input_ids=ids, edits=[Erase(5), Erase(32 + 5)])
            edited = box["x"]
    finally:
        h.remove()
    assert torch.all(edited[..., 5] == 0)
    keep = [i for i in range(32) if i != 5]
    assert torch.equal(edited[..., keep], plain[..., keep])
    assert plain[..., 5].abs().min() > 0
    # a neuron edit cannot reach the feature SAE at the same hook
    with pytest.raises(EditError, match="neurons@"):
        sm(input_ids=ids, edits=[Erase(5, hook="neurons@" + HOOK)])


def test_neuron_selection_scores_are_activation_times_gradient():
    sm = _setup()
    tok = sm.tokenizer
    edit = FeatureEdit.find(sm, TARGET, CONTRAST, top=4, units="neurons", method="attribution")
    assert edit.units == "neurons" and all(u.hook == "neurons@" + HOOK for u in edit.features)
    assert [len(e.hook) for e in edit.erasures()] and len(edit.erasures()) == 8
    # by hand: x_j * dlogP/dx_j summed over the selection positions, mean over facts
    def terms(facts):
        rows = []
        for f in facts:
            b = fact_batch(tok, [f])
            box = {}

            def keep(m, a, o):
                x = (o[0] if isinstance(o, tuple) else o)
                box["x"] = x
            h = sm.model.model.layers[1].register_forward_hook(keep)
            try:
                logits = sm.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            finally:
                h.remove()
            (g,) = torch.autograd.grad(answer_logprobs(logits, b)[0].sum(), [box["x"]])
            m = b.prompt_mask.clone()
            m[:, 0] = False
            rows.append((box["x"] * g * m.unsqueeze(-1)).sum(1)[0].detach())
        return torch.stack(rows)
    score = terms(TARGET).mean(0) - terms(CONTRAST).abs().mean(0)
    assert [u.feature for u in edit.features] == score.topk(4).indices.tolist()
    assert edit.features[0].score == pytest.approx(float(score.max()), rel=1e-4)


def test_several_hooks_ranked_together():
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(seed=1), hook="blocks.0.hook_resid_post", tokenizer=CharTokenizer())
    sm.attach(random_sae(seed=2), hook=HOOK)
    both = FeatureEdit.find(sm, TARGET, CONTRAST, top=12, method="attribution")
    scores = [u.score for u in both.features]
    assert scores == sorted(scores, reverse=True)
    assert {u.hook for u in both.features} == {"blocks.0.hook_resid_post", HOOK}
    one = FeatureEdit.find(sm, TARGET, CONTRAST, top=12, hooks=HOOK, method="attribution")
    assert {u.hook for u in one.features} == {HOOK}
    assert [u for u in both.features if u.hook == HOOK] == list(one.features)[: sum(u.hook == HOOK for u in both.features)]
    ids = torch.randint(3, 90, (1, 8))
    with sm.edits(both):  # the erasures are routed to their own hooks, at every token but the first
        steered = sm.model(input_ids=ids).logits
    plain = lm(input_ids=ids).logits
    assert torch.equal(steered[:, 0], plain[:, 0]) and not torch.allclose(steered[:, 1:], plain[:, 1:])


def test_recipe_round_trip_and_refusals(tmp_path):
    sm = _setup()
    edit = FeatureEdit.find(sm, TARGET, CONTRAST, top=6, positions="subject", method="attribution",
                            contrast_weight=2.0)
    path = edit.save(tmp_path / "erase.json")
    back = FeatureEdit.load(path, sm)
    assert back.features == edit.features and back.positions == "subject" and back.subjects == ("alice smith",)
    assert back.method == "attribution" and back.contrast_weight == 2.0 and back.units == "features"
    assert back.target == edit.target and back.contrast == edit.contrast and back.erasures() == edit.erasures()
    texts = ["alice smith lives in", "bob jones lives in"]
    assert back.for_texts(texts) == edit.for_texts(texts)
    unbound = FeatureEdit.load(path)
    assert unbound.features == edit.features
    with pytest.raises(EditError, match="not bound"):
        unbound.evaluate()
    # another SAE at the hook, another model of the same shape, another family
    for other, what in ((_setup(sae_seed=7), "weights_sha256"), (_setup(seed=5), "embedding fingerprint"),
                        (_setup(model_type="qwen2"), "model_type")):
        with pytest.raises(EditError, match=what):
            FeatureEdit.load(path, other)
    lm = tiny_lm("llama")
    with pytest.raises(EditError, match="needs an SAE there"):
        FeatureEdit.load(path, saesteer.wrap(lm, random_sae(), hook="blocks.0.hook_resid_post", tokenizer=CharTokenizer()))
    # a neuron recipe binds to the feature model through its neuron view
    nedit = FeatureEdit.find(sm, TARGET, CONTRAST, top=3, units="neurons")
    nback = FeatureEdit.load(nedit.save(tmp_path / "neurons.json"), sm)
    ids = torch.randint(3, 90, (1, 8))
    with nedit.model.edits(nedit):
        a = sm.model(input_ids=ids).logits
    with nback.model.edits(nback):
        b = sm.model(input_ids=ids).logits
    assert torch.equal(a, b)


def test_evaluation_arithmetic_by_hand():
    sm = _setup()
    tok = sm.tokenizer
    edit = FeatureEdit.find(sm, TARGET, CONTRAST, top=6)
    para = [Fact("alice smith resides in", " lyon")]
    unrelated = [Fact("the sky is", " blue"), Fact("two plus two is", " four")]
    held = ["a quiet line of text for perplexity", "another short held-out sentence"]
    report = edit.evaluate({"paraphrases": para, "unrelated": unrelated, "heldout": held}, verbose=False)

    def probs(facts, edits):
        out = []
        for f in facts:
            p, a = tok(f.prompt)["input_ids"], tok(f.answer)["input_ids"]
            ids = torch.tensor([p + a])
            with torch.no_grad():
                lp = torch.log_softmax(sm(input_ids=ids, edits=edits).logits[0].float(), -1)
            out.append(math.exp(sum(float(lp[len(p) - 1 + k, t]) for k, t in enumerate(a))))
        return out

    es = EditSet(tuple(Erase(u.feature) for u in edit.features), positions=Positions.range((1, None)))
    for name, facts, metric in (("target", TARGET, "rel"), ("paraphrases", para, "rel"), ("contrast", CONTRAST, "loc"),
                                ("unrelated", unrelated, "loc")):
        p0, p1 = probs(facts, None), probs(facts, es)
        g = report.groups[name]
        assert g.p0 == pytest.approx(p0, rel=1e-4) and g.p1 == pytest.approx(p1, rel=1e-4)
        want = 1 - sum(p1) / sum(p0) if metric == "rel" else 1 - sum(abs(b - a) for a, b in zip(p0, p1)) / sum(p0)
        assert g.score == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert report.reliability == report.groups["target"].score
    assert report.locality_unrelated == report.groups["unrelated"].score
    assert report.reliability != 0  # the edit moved the target

    def ppl(edits):
        nll, n = 0.0, 0
        for t in held:
            ids = torch.tensor([tok(t)["input_ids"]])
            with torch.no_grad():
                lp = torch.log_softmax(sm(input_ids=ids, edits=edits).logits[0, :-1].float(), -1)
            nll -= float(lp.gather(-1, ids[0, 1:, None]).sum())
            n += ids.shape[1] - 1
        return math.exp(nll / n), n

    (a, n), (b, _) = ppl(None), ppl(es)
    assert report.heldout_tokens == n
    assert report.ppl0 == pytest.approx(a, rel=1e-5) and report.delta_ppl == pytest.approx(b - a, rel=1e-4, abs=1e-6)
    text = str(report)
    assert "reliability" in text and "locality" in text and "perplexity" in text


def test_subject_positions_erase_only_the_subject_tokens():
    sm = _setup()
    edit = FeatureEdit.find(sm, TARGET, CONTRAST, top=6, positions="subject")
    texts = ["so alice smith lives in", "nobody here"]
    spec = edit.for_texts(texts)
    assert spec[0].positions == Positions.range((3, 14)) and not spec[1]  # CharTokenizer: one token per char
    assert edit.for_texts(["alice smith is"])[0].positions == Positions.range((1, 11))  # never the first token
    with pytest.raises(EditError, match="for_texts"):
        with sm.edits(edit):
            pass
    ids = torch.tensor([sm.tokenizer(texts[0])["input_ids"]])
    with torch.no_grad():
        by_rows = sm(input_ids=ids, edits=spec[:1]).logits
        by_hand = sm(input_ids=ids, edits=edit.edit_set(Positions.range((3, 14)))).logits
    assert torch.equal(by_rows, by_hand)


def test_subject_edit_evaluation_and_baseline_reuse():
    """Rows without the subject keep their unedited numbers; rows with it match a by-hand per-row
    forward; a baseline report gives the same numbers as measuring the unedited model again."""
    sm = _setup()
    tok = sm.tokenizer
    edit = FeatureEdit.find(sm, TARGET, CONTRAST, top=6, positions="subject")
    para = [Fact("where does alice smith live? in", " lyon"), Fact("bob jones resides in", " oslo")]
    held = ["alice smith wrote this line", "a line about nobody"]
    report = edit.evaluate({"paraphrases": para, "heldout": held}, verbose=False)
    g = report.groups["paraphrases"]
    assert g.p1[1] == g.p0[1]  # no subject: untouched
    p, a = tok(para[0].prompt)["input_ids"], tok(para[0].answer)["input_ids"]
    start = para[0].prompt.index("alice smith")
    es = edit.edit_set(Positions.range((start, start + len("alice smith"))))
    with torch.no_grad():
        lp = torch.log_softmax(sm(input_ids=torch.tensor([p + a]), edits=es).logits[0], -1)
    assert g.p1[0] == pytest.approx(math.exp(sum(float(lp[len(p) - 1 + k, t]) for k, t in enumerate(a))), rel=1e-4)
    assert g.p1[0] != g.p0[0] and report.ppl1 != report.ppl0
    smaller = edit.top(2)
    again = smaller.evaluate({"paraphrases": para, "heldout": held}, verbose=False)
    reused = smaller.evaluate({"paraphrases": para, "heldout": held}, verbose=False, baseline=report)
    assert reused.groups["target"].p0 == report.groups["target"].p0
    for k in again.groups:
        assert reused.groups[k].p1 == pytest.approx(again.groups[k].p1, rel=1e-5)
        assert reused.groups[k].p0 == pytest.approx(again.groups[k].p0, rel=1e-5)
    assert reused.ppl1 == pytest.approx(again.ppl1, rel=1e-5)


def test_errors_before_anything_runs():
    sm = _setup()
    before = {k: v.clone() for k, v in sm.model.state_dict().items()}
    with pytest.raises(EditError, match="target is empty"):
        FeatureEdit.find(sm, [], CONTRAST)
    with pytest.raises(EditError, match="contrast is empty"):
        FeatureEdit.find(sm, TARGET, [])
    with pytest.raises(EditError, match="no SAE attached"):
        FeatureEdit.find(sm, TARGET, CONTRAST, hooks="blocks.0.hook_resid_post")
    with pytest.raises(EditError, match="no SAE attached"):
        FeatureEdit.find(saesteer.wrap(tiny_lm("llama"), tokenizer=CharTokenizer()), TARGET, CONTRAST)
    misplaced = random_sae()
    misplaced.cfg.hook_name = "blocks.0.hook_resid_post"
    with pytest.raises(HookError, match="trained at blocks.0.hook_resid_post"):  # wrap refuses it first
        saesteer.wrap(tiny_lm("llama"), misplaced, hook=HOOK, tokenizer=CharTokenizer())
    with pytest.warns(UserWarning, match="force_hook=True"):
        forced = saesteer.wrap(tiny_lm("llama"), misplaced, hook=HOOK, tokenizer=CharTokenizer(), force_hook=True)
    with pytest.raises(EditError, match="trained for blocks.0.hook_resid_post"):
        FeatureEdit.find(forced, TARGET, CONTRAST)
    with pytest.raises(EditError, match="tokenizer"):
        FeatureEdit.find(saesteer.wrap(tiny_lm("llama"), random_sae(), hook=HOOK), TARGET, CONTRAST)
    with pytest.raises(EditError, match="subject"):
        FeatureEdit.find(sm, ["alice lives in lyon."], CONTRAST, positions="subject")
    with pytest.raises(EditError, match="method"):
        FeatureEdit.find(sm, TARGET, CONTRAST, method="magic")
    with pytest.raises(EditError, match="top"):
        FeatureEdit.find(sm, TARGET, CONTRAST, top=0)
    with pytest.raises(EditError, match="contrast_weight"):
        FeatureEdit.find(sm, TARGET, CONTRAST, contrast_weight=-1)
    with pytest.raises(EditError, match="units"):
        FeatureEdit.find(sm, TARGET, CONTRAST, units="heads")
    with pytest.raises(EditError, match="does not occur"):
        Fact("alice lives in", " lyon", subject="bob")
    assert Fact("Alice Smith lives in", " Lyon") == saesteer.featureedit.facts.as_fact("Alice Smith lives in Lyon.")
    after = sm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not sm.model._forward_hooks and not sm.model.model.layers[1]._forward_hooks


@pytest.mark.real
def test_real_model_erases_france_and_round_trips(tmp_path):
    """SmolLM2-135M-Instruct + the bundled SAE: the API end to end on a small France fact set."""
    from saesteer.embedded import load_default

    sm, tok = load_default()
    tok.padding_side = "right"
    target = [Fact("The capital of France is", " Paris", "France"),
              Fact("The official language of France is", " French", "France")]
    contrast = [Fact("The capital of Germany is", " Berlin", "Germany"), Fact("The capital of Italy is", " Rome", "Italy"),
                Fact("The official language of Germany is", " German", "Germany"),
                Fact("The capital of Japan is", " Tokyo", "Japan")]
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        before = sm.model(**ids).logits
    edit = FeatureEdit.find(sm, target, contrast, top=8, method="attribution")
    assert len(edit.features) == 8 and all(u.label for u in edit.features)  # bundled labels come along
    report = edit.evaluate({"paraphrases": [Fact("The capital city of France is", " Paris", "France")]}, verbose=False)
    assert report.groups["target"].acc0 == 1.0 and report.groups["contrast"].acc0 == 1.0  # facts the model knows
    assert report.reliability > 0  # the target answers became less likely
    neurons = FeatureEdit.find(sm, target, contrast, top=8, units="neurons", method="attribution")
    assert neurons.evaluate(verbose=False, baseline=report).groups["target"].p0 == report.groups["target"].p0
    back = FeatureEdit.load(edit.save(tmp_path / "erase_france.json"), sm)
    with sm.edits(back):
        out = sm.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3
    with torch.no_grad():
        assert torch.equal(sm.model(**ids).logits, before)  # nothing left on the model
