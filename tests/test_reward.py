"""SARM reward heads and SAEs inside existing reward models, on tiny random Llamas built from configs."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import transformers as tf
from safetensors.torch import save_file

import saesteer
from saesteer.errors import EditError, HookError, RewardError
from saesteer.reward import SARM, erase_effects, reward_change
from tiny import CONFIGS, VOCAB, CharTokenizer, batch, random_sae, tiny_lm

F = 64


def sarm_sae(seed: int = 1) -> saesteer.SAE:
    """A SARM-style SAE: per-token standardisation (eps 1e-6), TopK with no ReLU on kept values."""
    sae = random_sae(d_sae=F, architecture="topk", seed=seed, k=8, normalize="layer_norm", norm_eps=1e-6,
                     topk_relu=False)
    with torch.no_grad():
        sae.b_enc.sub_(1.0)  # some kept pre-activations are negative, as SARM allows
    return sae


def head_weight(seed: int = 5) -> torch.Tensor:
    return torch.randn(F, generator=torch.Generator().manual_seed(seed))


def by_hand(h: torch.Tensor, sae: saesteer.SAE, w: torch.Tensor, topk: bool = True) -> torch.Tensor:
    """SARM's forward written out: standardise (unbiased std, eps 1e-6), pre-acts, top-k kept as they
    are, bias-free score. ``h [B, d]`` are last-token activations."""
    W_enc, b_enc, b_dec = sae.W_enc.detach(), sae.b_enc.detach(), sae.b_dec.detach()
    x = (h - h.mean(-1, keepdim=True)) / (h.std(-1, keepdim=True) + 1e-6)
    z = (x - b_dec) @ W_enc + b_enc
    if topk:
        v, i = z.topk(8, dim=-1)
        z = torch.zeros_like(z).scatter(-1, i, v)
    return (z.double() * w.double()).sum(-1)


def make_rm(seed: int = 0, layer: int = 2, topk: bool = True) -> tuple[SARM, torch.nn.Module, saesteer.SAE]:
    lm = tiny_lm("llama", seed=seed)
    sae = sarm_sae()
    rm = SARM.from_backbone(lm, sae, layer=layer, tokenizer=CharTokenizer(), use_topk=topk, weight=head_weight())
    return rm, lm, sae


# ------------------------------------------------------------------------------ the head
@pytest.mark.parametrize("topk", [True, False], ids=["TopK", "woTopK"])
def test_reward_is_sarm_by_hand(topk):
    rm, lm, sae = make_rm(topk=topk)
    x = batch(B=3, T=9)
    with torch.no_grad():
        hs = lm(**x, output_hidden_states=True).hidden_states
    # layer=2 keeps two decoder layers: hidden_states[2] is their output, before any final norm
    expect = by_hand(hs[2][:, -1], sae, head_weight(), topk)
    got = rm.rewards(x["input_ids"], x["attention_mask"])
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    assert rm.hook == "blocks.1.hook_resid_post" and rm.backbone.layers_kept == 2


def test_left_and_right_padding_read_the_same_token():
    rm, _, _ = make_rm()
    g = torch.Generator().manual_seed(4)
    rows = [torch.randint(3, VOCAB, (n,), generator=g) for n in (7, 4, 9)]
    alone = torch.cat([rm.rewards(r[None]) for r in rows])
    T = 9
    right = torch.zeros(3, T, dtype=torch.long)
    left = torch.zeros(3, T, dtype=torch.long)
    mr, ml = torch.zeros_like(right), torch.zeros_like(left)
    for b, r in enumerate(rows):
        right[b, : len(r)], mr[b, : len(r)] = r, 1
        left[b, T - len(r):], ml[b, T - len(r):] = r, 1
    torch.testing.assert_close(rm.rewards(right, mr), alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm.rewards(left, ml), alone, rtol=1e-5, atol=1e-5)


def test_backbone_stops_after_layer_and_leaves_the_model_as_it_was():
    rm, lm, _ = make_rm(layer=2)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    ran = []
    handles = [lm.model.layers[2].register_forward_hook(lambda *a: ran.append("layer2")),
               lm.model.norm.register_forward_hook(lambda *a: ran.append("norm")),
               lm.lm_head.register_forward_hook(lambda *a: ran.append("lm_head"))]
    rm.score(["abc def", ("q", "an answer")])
    for h in handles:
        h.remove()
    assert ran == []  # nothing after layer L ran: no final norm, no LM head
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.modules())
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    assert rm.backbone.model is lm  # not copied


# ------------------------------------------------------------------------------ SARM checkpoints
def write_sarm_release(folder, lm: torch.nn.Module, sae: saesteer.SAE, w: torch.Tensor, layers: int,
                       use_activation: bool = True) -> None:
    """A checkpoint with SARM's key layout (LlamaSARM): model.* for the kept layers, score, sae.*."""
    t = {k: v.clone() for k, v in lm.state_dict().items() if k.startswith("model.")
         and not any(k.startswith(f"model.layers.{i}.") for i in range(layers, lm.config.num_hidden_layers))}
    t.update({"score.weight": w.reshape(1, -1).clone(), "sae.pre_bias": sae.b_dec.detach().clone(),
              "sae.latent_bias": sae.b_enc.detach().clone(), "sae.encoder.weight": sae.W_enc.detach().T.contiguous(),
              "sae.decoder.weight": sae.W_dec.detach().T.contiguous()})
    half = len(t) // 2
    keys = sorted(t)
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: t[k].contiguous() for k in ks}, str(folder / name), metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    cfg = lm.config.to_dict()
    cfg.update({"architectures": ["LlamaSARM"], "num_labels": 1, "sarm_param": {
        "sae_latent_size": F, "sae_k": 8, "sae_source_layer": layers, "sarm_use_activation": use_activation}})
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("use_activation", [True, False], ids=["TopK", "woTopK"])
def test_sarm_release_checkpoint_loads(tmp_path, use_activation):
    lm = tiny_lm("llama", seed=7)
    sae, w = sarm_sae(seed=3), head_weight(9)
    write_sarm_release(tmp_path, lm, sae, w, layers=2, use_activation=use_activation)
    rm = SARM.from_pretrained(tmp_path, tokenizer=CharTokenizer())
    assert rm.head.use_topk is use_activation and len(rm.backbone.model.layers) == 2
    x = batch(B=2, T=8, seed=5)
    with torch.no_grad():
        hs = lm(**x, output_hidden_states=True).hidden_states
    expect = by_hand(hs[2][:, -1], sae, w, use_activation)
    torch.testing.assert_close(rm.rewards(x["input_ids"]), expect, rtol=1e-5, atol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    rm, lm, _ = make_rm()
    convs = ["first text", ("a prompt", "a reply")]
    rm.save(tmp_path / "rm")
    assert (tmp_path / "rm" / "score.safetensors").is_file() and (tmp_path / "rm" / "sae" / "cfg.json").is_file()
    back = SARM.from_pretrained(tmp_path / "rm", backbone=lm, tokenizer=CharTokenizer())
    torch.testing.assert_close(back.score(convs), rm.score(convs), rtol=0, atol=1e-12)
    with pytest.raises(RewardError, match="pass backbone="):
        SARM.from_pretrained(tmp_path / "rm")


# ------------------------------------------------------------------------------ attribution and edits
def test_explain_sums_exactly_to_the_reward():
    rm, _, _ = make_rm()
    conv = ("Tell me something", "Here is something")
    why = rm.explain(conv, top=3)
    assert len(why.contributions) == 3 and why.active == 8
    assert sum(c.contribution for c in why.contributions) + why.rest == pytest.approx(why.reward, abs=1e-12)
    assert why.reward == pytest.approx(float(rm.score([conv])[0]), abs=1e-12)
    for c in why.contributions:
        assert c.contribution == pytest.approx(c.weight * c.activation, rel=1e-6)
    full = rm.explain(conv, top=F)
    assert full.rest == pytest.approx(0.0, abs=1e-12) and len(full.contributions) == 8
    other = ("Tell me something", "Nothing at all")
    pref = rm.explain_preference(conv, other, top=4)
    r = rm.score([conv, other])
    assert pref.kind == "margin" and pref.reward == pytest.approx(float(r[0] - r[1]), abs=1e-9)
    assert sum(c.contribution for c in pref.contributions) + pref.rest == pytest.approx(pref.reward, abs=1e-12)
    for c in pref.contributions:
        assert c.contribution == pytest.approx(c.weight * c.activation, rel=1e-6, abs=1e-9)
    assert "margin" in str(pref)


def _fires_in_one_only(rm: SARM, a: str, b: str) -> int:
    fa, fb = rm.features([a, b])
    only = ((fa != 0) & (fb == 0)).nonzero().flatten()
    assert len(only), "the two texts share all their features"
    return int(only[0])


def test_reweight_changes_the_reward_only_where_the_feature_fires():
    rm, _, _ = make_rm()
    a, b = "the first conversation", "another one entirely!"
    i = _fires_in_one_only(rm, a, b)
    f_a = float(rm.features([a])[0, i])
    before = rm.score([a, b])
    w_i = float(rm.weight[i])
    shifted = rm.reweight({i: w_i + 2.0}, copy=True)
    after = shifted.score([a, b])
    assert after[1] == before[1]  # the feature does not fire in b: its reward is untouched, bit for bit
    assert float(after[0] - before[0]) == pytest.approx(2.0 * f_a, rel=1e-6)
    torch.testing.assert_close(rm.score([a, b]), before, rtol=0, atol=0)  # copy=True left rm alone
    assert rm.reweight({i: 0.0}) is rm and float(rm.weight[i]) == 0.0
    with pytest.raises(EditError):
        rm.reweight({F: 1.0})
    with pytest.raises(RewardError):
        rm.reweight({0: float("nan")})


def test_sarm_steering_json(tmp_path):
    rm, _, _ = make_rm()
    a, b = "the first conversation", "another one entirely!"
    i = _fires_in_one_only(rm, a, b)
    f_a, w_i = float(rm.features([a])[0, i]), float(rm.weight[i])
    base = rm.score([a, b])
    # "*": only where the feature fires
    r = rm.score([a, b], steer={str(i): ["*", 3.0]})
    assert r[1] == base[1] and float(r[0] - base[0]) == pytest.approx(2.0 * f_a * w_i, rel=1e-6)
    # "+" as SARM applies it: added at every token, so every reward moves by w_i * v
    r = rm.score([a, b], steer={i: ["+", 1.5]})
    torch.testing.assert_close(r - base, torch.full((2,), 1.5 * w_i, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    # "+" restricted to where the feature fires
    r = rm.score([a, b], steer={i: ["+", 1.5]}, only_active=True)
    assert r[1] == base[1] and float(r[0] - base[0]) == pytest.approx(1.5 * w_i, rel=1e-6)
    # a JSON file, and saesteer edits mean the same
    path = tmp_path / "steer.json"
    path.write_text(json.dumps({str(i): ["*", 3.0]}))
    torch.testing.assert_close(rm.score([a, b], steer=path), rm.score([a, b], steer=saesteer.Scale(i, 3.0)))
    why = rm.explain(a, steer={i: ["*", 0.0]}, top=F)
    assert all(c.feature != i for c in why.contributions) and why.edits == [f"Scale({i}, 0)"]
    for bad in ({str(i): ["/", 2]}, {"x": ["*", 2]}, {F + 3: ["*", 2]}, saesteer.Steer(torch.ones(32)),
                saesteer.Scale(i, 2.0, positions="prompt")):
        with pytest.raises(EditError):
            rm.score([a], steer=bad)


# ------------------------------------------------------------------------------ training
def _pairs(n: int, seed: int) -> list[tuple[str, str, str]]:
    """Chosen replies end with 'yes', rejected with 'no': what the last token reads decides."""
    g = torch.Generator().manual_seed(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "zeta", "kappa"]
    out = []
    for _ in range(n):
        pick = [words[int(j)] for j in torch.randint(len(words), (4,), generator=g)]
        out.append((" ".join(pick[:2]), f"{pick[2]} yes", f"{pick[3]} no"))
    return out


@pytest.mark.parametrize("mode", ["head", "head+sae"])
def test_fit_learns_a_preference_and_reports_heldout_accuracy(tmp_path, mode):
    lm = tiny_lm("llama")
    rm = SARM.from_backbone(lm, sarm_sae(), layer=2, tokenizer=CharTokenizer())
    sae_before = rm.sae.W_enc.clone()
    report = rm.fit(_pairs(40, 0), heldout=_pairs(16, 1), mode=mode, epochs=15, lr=3e-2, progress=False)
    assert report.n_train == 40 and report.n_heldout == 16 and len(report.history) == 16
    assert report.history[0].heldout_accuracy == 0.5  # a zero head ties every pair
    assert report.heldout_accuracy >= 0.9
    assert torch.equal(rm.sae.W_enc, sae_before) is (mode == "head")
    if mode == "head+sae":
        assert all(s.rec_loss is not None for s in report.history[1:])
    rm.save(tmp_path / "rm")
    back = SARM.from_pretrained(tmp_path / "rm", backbone=lm, tokenizer=CharTokenizer())
    test = [("q", "beta yes"), ("q", "beta no")]
    torch.testing.assert_close(back.score(test), rm.score(test), rtol=0, atol=1e-9)
    assert back.card["training"]["mode"] == mode


def test_fit_with_a_heldout_fraction_and_an_interrupted_fit_changes_nothing(monkeypatch):
    rm, _, _ = make_rm()
    w0 = rm.weight.clone()
    report = rm.fit(_pairs(20, 2), heldout=0.25, epochs=1, progress=False)
    assert (report.n_train, report.n_heldout) == (15, 5)
    w1 = rm.weight.clone()
    assert not torch.equal(w0, w1)

    import saesteer.reward.fit as fit_mod

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_mod.torch.optim.AdamW, "step", boom)
    with pytest.raises(KeyboardInterrupt):
        rm.fit(_pairs(20, 2), heldout=None, epochs=2, progress=False)
    assert torch.equal(rm.weight, w1)


# ------------------------------------------------------------------------------ errors
def test_bad_input_fails_before_the_backbone_runs():
    rm, lm, _ = make_rm()
    ran = []
    h = lm.model.embed_tokens.register_forward_hook(lambda *a: ran.append(1))
    try:
        for pairs in ([("p", "fine", "")], [("p", "  ", "fine")], [("p", "a")], [], [("p", None, "x")]):
            with pytest.raises(RewardError):
                rm.fit(pairs, progress=False)
        with pytest.raises(RewardError):
            rm.fit(_pairs(4, 0) + [("p", "ok", "")], progress=False)  # the bad pair is last
        with pytest.raises(RewardError):
            rm.score(["fine", ""])
        with pytest.raises(RewardError):
            rm.fit(_pairs(4, 0), mode="everything", progress=False)
    finally:
        h.remove()
    assert ran == []


def test_width_mismatches_are_reported():
    lm = tiny_lm("llama")
    with pytest.raises(RewardError, match="d_sae=64"):
        SARM.from_backbone(lm, sarm_sae(), layer=2, weight=torch.zeros(F + 1))
    with pytest.raises(HookError, match="d_in=16"):
        SARM.from_backbone(lm, random_sae(d_in=16, d_sae=F, architecture="topk"), layer=2)
    for layer in (0, 4, -1):
        with pytest.raises(HookError):
            SARM.from_backbone(lm, sarm_sae(), layer=layer)
    sae = sarm_sae()
    sae.cfg.hook_name = "blocks.2.hook_resid_post"
    with pytest.warns(UserWarning, match="layer=L reads blocks"):
        SARM.from_backbone(lm, sae, layer=2)  # SARM counts layers kept: this reads blocks.1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SARM.from_backbone(lm, sae, layer=3).hook == "blocks.2.hook_resid_post"
        assert SARM.from_backbone(lm, sae).hook == "blocks.2.hook_resid_post"  # the SAE's own hook


def test_long_conversations_are_cut_from_the_left_with_a_warning():
    rm, _, _ = make_rm()
    rm.max_length = 12
    text = "0123456789" * 3
    with pytest.warns(UserWarning, match="truncated from the left"):
        r = rm.score([text])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(rm.score([text[-12:]])[0]) == pytest.approx(float(r[0]), abs=1e-9)
        with pytest.warns(UserWarning):
            why = rm.explain(text)
    assert why.truncated == 18


def test_not_a_reward_model(tmp_path):
    with pytest.raises(RewardError):
        SARM.from_pretrained(tmp_path / "nothing")
    (tmp_path / "sarm.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(RewardError):
        SARM.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------ existing reward models
def tiny_reward_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = CONFIGS["llama"]()
    cfg.num_labels = 1
    return tf.LlamaForSequenceClassification(cfg).eval()


def test_wrap_sequence_classification_reward_change():
    model = tiny_reward_model()
    sae = random_sae(architecture="topk", d_sae=F, k=8)
    x = batch(B=2, T=8, left_pad=(0, 3))
    with torch.no_grad():
        bare = model(**x).logits[:, 0]
    rm = saesteer.wrap(model, sae, layer=1)
    assert rm.attachments["blocks.1.hook_resid_post"].point.path == "model.layers.1"
    feats = rm.features(**x, top_k=8)
    i = int(feats.indices[0, -1, 0])
    change = reward_change(rm, saesteer.Erase(i), **x)
    torch.testing.assert_close(change.before, bare, rtol=0, atol=1e-6)  # unedited rows are the bare model
    with torch.no_grad():
        alone = rm(**x, edits=saesteer.Erase(i)).logits[:, 0]
    torch.testing.assert_close(change.after, alone, rtol=1e-5, atol=1e-6)
    assert change.delta.abs().max() > 0
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(EditError):
        reward_change(rm, saesteer.Erase(F + 1), **x)


def test_erase_effects_on_a_wrapped_reward_model():
    model = tiny_reward_model(1)
    rm = saesteer.wrap(model, random_sae(architecture="topk", d_sae=F, k=8), layer=1, tokenizer=CharTokenizer())
    effects = erase_effects(rm, texts="a short reply", top=4)
    assert 1 <= len(effects) <= 4
    assert [abs(e.reward_change) for e in effects] == sorted((abs(e.reward_change) for e in effects), reverse=True)
    one = effects[0]
    change = reward_change(rm, saesteer.Erase(one.feature), texts="a short reply")
    assert float(change.delta[0]) == pytest.approx(one.reward_change, abs=1e-5)


def test_sarm_on_a_sequence_classification_trunk():
    model = tiny_reward_model(2)
    rm = SARM.from_backbone(model, sarm_sae(), layer=2, weight=head_weight())
    x = batch(B=2, T=6)
    with torch.no_grad():
        hs = model(**x, output_hidden_states=True).hidden_states
    torch.testing.assert_close(rm.rewards(x["input_ids"]), by_hand(hs[2][:, -1], sarm_sae(), head_weight()),
                               rtol=1e-5, atol=1e-5)
