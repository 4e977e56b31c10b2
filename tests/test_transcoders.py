"""Transcoders and skip transcoders: read the MLP's input, write the MLP's output. An edit gives
``mlp_out + decode(f') - decode(f)`` with f encoded from the MLP input (the error, and the skip
connection, cancel); reconstruct mode replaces the MLP output by the transcoder's prediction."""

from __future__ import annotations

import pytest
import torch

import saesteer
from saesteer import HookError, SAEFormatError
from saesteer.sae.module import SAE, SAEConfig
from saesteer.runtime.taps import saesteer_hooks
from tiny import D, batch, tiny_lm

F = 48


def random_transcoder(arch: str = "relu", skip: bool = False, d_out: int = D, seed: int = 4) -> SAE:
    g = torch.Generator().manual_seed(seed)
    tc = SAE(SAEConfig(d_in=D, d_sae=F, architecture=arch, apply_b_dec_to_input=False, d_out=d_out, skip=skip,
                       hook_name="blocks.1.hook_mlp_in", hook_name_out="blocks.1.hook_mlp_out"))
    with torch.no_grad():
        tc.W_enc.copy_(torch.randn(D, F, generator=g) / D**0.5)
        tc.W_dec.copy_(torch.randn(F, d_out, generator=g) / F**0.5)
        tc.b_enc.copy_(torch.randn(F, generator=g) * 0.1)
        tc.b_dec.copy_(torch.randn(d_out, generator=g) * 0.1)
        if arch == "jumprelu":
            tc.threshold.copy_(torch.rand(F, generator=g) * 0.2)
        if skip:
            tc.W_skip.copy_(torch.randn(d_out, D, generator=g) / D)
    return tc.eval()


def _io(module):
    seen = []
    h = module.register_forward_hook(lambda m, a, o: seen.append((a[0].detach().clone(), o.detach().clone())))
    return seen, h


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("arch,skip", [("relu", False), ("jumprelu", True)])
def test_edits_write_the_mlp_output_by_hand(model_type, arch, skip):
    lm = tiny_lm(model_type)
    tc = random_transcoder(arch, skip)
    sm = saesteer.wrap(lm, tc)
    att = sm.attachment()
    assert att.name == "blocks.1.hook_mlp_in" and att.point_out.name == "blocks.1.hook_mlp_out"
    mlp = att.point.module
    b = batch(left_pad=(2,))
    seen, h = _io(mlp)
    out_seen, h2 = [], att.point_out.module.register_forward_hook(lambda m, a, o: out_seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            ref = lm(**b).logits
            x_in, _ = seen[-1]
            y = out_seen[-1]
            assert torch.equal(sm(**b).logits, ref)  # zero edits: bit-exact
            sm(**b, edits=[saesteer.Clamp(3, 5.0), saesteer.Scale(7, 2.0), saesteer.Add(9, 1.5)])
            got = out_seen[-1]
            assert torch.equal(seen[-1][0], x_in)  # the MLP input is read, never written
            f = tc.encode(x_in)
            f2 = f.clone()
            f2[..., 3] = 5.0
            f2[..., 7] *= 2.0
            f2[..., 9] += 1.5
            want = y + (f2 - f) @ tc.W_dec
            valid = b["attention_mask"].bool()
            torch.testing.assert_close(got[valid], want[valid], atol=1e-5, rtol=1e-5)
            assert torch.equal(got[~valid], y[~valid])
            sm(**b, edits={3: 5.0}, mode="reconstruct")
            f3 = f.clone()
            f3[..., 3] = 5.0
            torch.testing.assert_close(out_seen[-1][valid], tc.decode(f3, x=x_in)[valid], atol=1e-5, rtol=1e-5)
    finally:
        h.remove()
        h2.remove()
    assert saesteer_hooks(lm) == 0


@pytest.mark.parametrize("skip", [False, True])
def test_kv_cache_and_positions_with_saesteer_check(skip):
    report = saesteer.check(tiny_lm("llama"), random_transcoder("relu", skip), progress=False, max_new_tokens=5)
    assert report.passed, report.table()


def test_features_read_the_transcoder_input():
    lm = tiny_lm("llama")
    tc = random_transcoder()
    sm = saesteer.wrap(lm, tc)
    b = batch()
    seen, h = _io(sm.attachment().point.module)
    try:
        acts = sm.features(**b, top_k=4)
    finally:
        h.remove()
    want = tc.encode(seen[-1][0]).topk(4, dim=-1)
    torch.testing.assert_close(acts.values, want.values)


def test_forward_matches_saelens_transcoders():
    sl = pytest.importorskip("sae_lens")
    from sae_lens.saes.transcoder import SkipTranscoder, SkipTranscoderConfig, Transcoder, TranscoderConfig

    for skip, cls, cfg_cls in ((False, Transcoder, TranscoderConfig), (True, SkipTranscoder, SkipTranscoderConfig)):
        ours = random_transcoder("relu", skip, d_out=D + 8)
        theirs = cls(cfg_cls(d_in=D, d_sae=F, d_out=D + 8, dtype="float32", device="cpu",
                             apply_b_dec_to_input=False))
        sd = {k: v for k, v in ours.state_dict().items()}
        theirs.load_state_dict(sd, strict=False)
        x = torch.randn(5, D)
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    assert sl is not None


def test_refusals():
    lm = tiny_lm("llama")
    with pytest.raises(HookError, match="d_out=40 does not match"):
        saesteer.wrap(lm, random_transcoder(d_out=40))
    tc = random_transcoder()
    tc.cfg.hook_name_out = None
    tc.cfg.hook_name = None
    with pytest.raises(HookError, match="hook_out="):
        saesteer.wrap(lm, tc, hook="blocks.1.hook_resid_post")
    assert saesteer.wrap(lm, tc, hook="blocks.1.hook_mlp_in").attachment().point_out.name == "blocks.1.hook_mlp_out"
    with pytest.raises(SAEFormatError, match="apply_b_dec_to_input"):
        SAEConfig(d_in=D, d_sae=F, d_out=D, apply_b_dec_to_input=True)
    with pytest.raises(HookError, match="hook_out= is for transcoders"):
        from tiny import random_sae
        saesteer.wrap(lm, random_sae(), layer=1, hook_out="blocks.1.hook_mlp_out")
