"""Feature labels: computed from text on a tiny model, checked by brute force; stored, found, searched."""

from __future__ import annotations

import torch

import saesteer
from saesteer.labeling import label_features, logit_tokens
from saesteer.labels import FeatureLabels
from saesteer.train.activations import capture_activations
from tiny import CharTokenizer, random_sae, tiny_lm

DOCS = [("the quick brown fox jumps over the lazy dog", "fables"), ("thou art more lovely and more temperate", "shakespeare"),
        ("def add(a, b): return a + b", "python"), ("in the beginning was the word", "kjv"),
        ("shall i compare thee to a summer's day", "shakespeare"), ("import os; print(os.getcwd())", "python")]


def _labels():
    lm, tok, sae = tiny_lm("llama"), CharTokenizer(), random_sae(d_sae=48)
    return lm, tok, sae, label_features(lm, tok, sae, "blocks.1.hook_resid_post", DOCS, context=32, batch_size=4,
                                        keep=4, show=2, progress=False)


def test_labels_match_brute_force():
    lm, tok, sae, labels = _labels()
    acts = []  # every (value, doc, pos) by brute force
    with torch.no_grad():
        for d, (text, _) in enumerate(DOCS):
            ids = torch.tensor([tok(text)["input_ids"][:32]])
            f = sae.encode(capture_activations(lm, "blocks.1.hook_resid_post", ids))[0]
            acts.append(f[1:])  # position 0 is left out
    allf = torch.cat(acts)
    fired = (allf > 0).sum(0)
    for feat in range(sae.d_sae):
        info = labels.info(feat)
        assert info["density"] == float(fired[feat]) / allf.shape[0]
        if fired[feat] == 0:
            assert info["label"].startswith("dead")
            continue
        assert abs(info["max_activation"] - float(allf[:, feat].max())) < 1e-5
        assert abs(info["contexts"][0]["value"] - round(float(allf[:, feat].max()), 3)) < 1e-3
        assert abs(sum(info["sources"].values()) - 1) < 0.01
    want = logit_tokens(lm, tok, sae, top=10)
    head, norm = lm.get_output_embeddings(), lm.model.norm
    with torch.no_grad():
        top0 = head(norm(sae.W_dec[0])).topk(10).indices
    assert want[0] == [tok.decode([int(t)]) for t in top0]


def test_round_trip_search_and_attach(tmp_path):
    lm, tok, sae, labels = _labels()
    folder = saesteer.save_sae(sae, tmp_path / "sae")
    labels.save(folder)
    back = saesteer.load_sae(folder)
    assert isinstance(back.labels, FeatureLabels) and len(back.labels) == sae.d_sae
    assert back.labels[5] == labels[5] and back.labels.info(7) == labels.info(7)
    # a feature whose contexts come mostly from one source is found by that source's name
    dominated = {}
    for f in labels:
        srcs = labels.info(f)["sources"]
        if srcs and max(srcs.values()) >= 0.5:
            dominated.setdefault(max(srcs, key=srcs.get), []).append(f)
    assert dominated
    for src, feats in dominated.items():
        hits = {m.feature for m in back.labels.search(src, top=1000)}
        assert set(feats) <= hits, src
    assert back.labels.search("zzzz-no-such-word") == []
    sm = saesteer.wrap(lm, back, layer=1, tokenizer=tok)
    ids = torch.tensor([tok("thou art")["input_ids"]])
    fa = sm.features(input_ids=ids, top_k=3)
    rec = fa.to_records()[1]
    assert all(d["label"] == back.labels[d["feature"]] for d in rec["features"])


def test_search_scoring():
    recs = [
        {"feature": 0, "label": "a", "top_tokens": [" thou"], "sources": {"shakespeare": 0.9}, "logit_tokens": [], "contexts": [], "density": 0.01},
        {"feature": 1, "label": "b", "top_tokens": [" the"], "sources": {"kjv": 0.6}, "logit_tokens": [" thou"], "contexts": [], "density": 0.01},
        {"feature": 2, "label": "c", "top_tokens": [" x"], "sources": {"python": 1.0}, "logit_tokens": [], "contexts": [], "density": 0.01},
    ]
    fl = FeatureLabels(recs)
    assert [m.feature for m in fl.search("thou")] == [0, 1]
    assert [m.feature for m in fl.search("shakespeare thou")] == [0]
    assert [m.feature for m in fl.search("python")] == [2]


def test_labels_found_beside_an_sae_are_read_on_first_use(tmp_path):
    """An attached SAE does not hold its labels' records until someone asks for a label."""
    FeatureLabels([{"feature": 0, "label": "zero", "top_tokens": ["a"]},
                   {"feature": 3, "label": "three", "top_tokens": ["b"]}], {"how": "test"}).save(tmp_path)
    labels = FeatureLabels.find(tmp_path)
    assert labels._records is None                      # nothing parsed yet
    assert labels[3] == "three" and len(labels) == 2 and labels.meta == {"how": "test"}
    assert labels.search("b")[0].feature == 3
    assert FeatureLabels.find(tmp_path / "nowhere") is None
