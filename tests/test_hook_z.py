"""Attention SAEs at ``blocks.L.attn.hook_z`` (the heads' outputs before the output projection, as
SAELens' ``reshape_activations: hook_z`` SAEs read them) and the MLP input ``hook_mlp_in``, on every
decoder family: zero edits bit-exact, edits equal a by-hand computation, KV-cached generate equals a
cache-free re-run, positions respected. Gemma's hook_mlp_out / hook_attn_out sit after its post norms."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

import saesteer
from saesteer import Positions
from saesteer.adapters import adapter_for
from tiny import MODEL_TYPES, _common, batch, random_sae, tiny_lm

N_NEW = 5


def _record_input(module):
    """What ``module``'s forward actually received (a forward hook sees the args after every pre-hook)."""
    seen = []
    h = module.register_forward_hook(lambda m, a, k, o: seen.append((a[0] if a else k["hidden_states"]).detach().clone()),
                                     with_kwargs=True)
    return seen, h


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_hook_z_edits_by_hand_and_zero_edit_exact(model_type):
    lm = tiny_lm(model_type)
    point = adapter_for(lm).resolve(lm, "blocks.1.attn.hook_z")
    sae = random_sae(d_in=point.width)
    sm = saesteer.wrap(lm, sae, hook="blocks.1.attn.hook_z")
    assert sm.attachment_name() == "blocks.1.attn.hook_z" and point.io == "input"
    b = batch(left_pad=(2,))
    seen, h = _record_input(point.module)
    try:
        with torch.no_grad():
            ref = lm(**b).logits
            x = seen[-1]
            assert torch.equal(sm(**b).logits, ref)
            sm(**b, edits=[saesteer.Clamp(3, 4.0), saesteer.Scale(5, 2.0)])
            got = seen[-1]
        f = sae.encode(x)
        f2 = f.clone()
        f2[..., 3] = 4.0
        f2[..., 5] *= 2.0
        want = x + (f2 - f) @ sae.W_dec
        valid = b["attention_mask"].bool()
        torch.testing.assert_close(got[valid], want[valid], atol=1e-5, rtol=1e-5)
        assert torch.equal(got[~valid], x[~valid])  # pads never steered
    finally:
        h.remove()


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox", "gemma2"])
@pytest.mark.parametrize("hook", ["blocks.1.attn.hook_z", "blocks.1.hook_mlp_in"])
def test_kv_cached_generate_equals_cache_free_rerun(model_type, hook):
    lm = tiny_lm(model_type)
    width = adapter_for(lm).resolve(lm, hook).width
    report = saesteer.check(lm, random_sae(d_in=width), hook=hook, progress=False, max_new_tokens=N_NEW)
    assert report.passed, report.table()


def test_hook_z_width_is_heads_times_head_dim_not_hidden():
    """A model whose heads are wider than its residual stream: hook_z is n_heads * d_head wide."""
    torch.manual_seed(0)
    cfg = tf.Gemma2Config(**_common(head_dim=16, query_pre_attn_scalar=16, sliding_window=16))
    lm = tf.AutoModelForCausalLM.from_config(cfg).eval()
    point = adapter_for(lm).resolve(lm, "blocks.0.attn.hook_z")
    assert point.width == 4 * 16 != cfg.hidden_size
    with pytest.raises(saesteer.HookError, match="width"):
        saesteer.wrap(lm, random_sae(d_in=cfg.hidden_size), hook="blocks.0.attn.hook_z")
    sm = saesteer.wrap(lm, random_sae(d_in=64), hook="blocks.0.attn.hook_z")
    b = batch(B=1, T=6)
    with torch.no_grad():
        assert not torch.allclose(sm(**b, edits={2: 9.0}, positions=Positions.range((3, 6))).logits[:, 3:],
                                  lm(**b).logits[:, 3:])
        assert torch.equal(sm(**b, edits={2: 9.0}, positions=Positions.range((3, 6))).logits[:, :3],
                           lm(**b).logits[:, :3])


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_gemma_mlp_and_attn_out_are_after_the_post_norms(model_type):
    """TransformerLens (and so every SAELens Gemma SAE) reads hook_mlp_out after post_feedforward_layernorm
    and hook_attn_out after post_attention_layernorm: the tensors added to the residual stream."""
    lm = tiny_lm(model_type)
    layer = lm.model.layers[1]
    assert adapter_for(lm).resolve(lm, "blocks.1.hook_mlp_out").module is layer.post_feedforward_layernorm
    assert adapter_for(lm).resolve(lm, "blocks.1.hook_attn_out").module is layer.post_attention_layernorm
    assert adapter_for(lm).resolve(lm, "model.layers.1.post_feedforward_layernorm").name == "blocks.1.hook_mlp_out"
