"""SAEs on vision towers: LLaVA-1.5 / LLaVA-NeXT steered through CLIP layer 22 (never through the
language model), bare CLIP / SigLIP towers and CLIPModel's zero-shot scores, image positions,
per-image edits, and sae-for-vlm's checkpoints and semantics."""

from __future__ import annotations

import json

import pytest
import torch

import saesteer
from saesteer import EditError, HookError, Positions
from saesteer.runtime.taps import saesteer_hooks
from tiny import random_sae
from tiny_vision import (D_VISION, IMAGE_TOKEN, N_PATCHES, llava_inputs, llava_next_inputs, pixels, tiny_clip,
                         tiny_clip_vision, tiny_llava, tiny_llava_next, tiny_siglip, tiny_siglip_vision)

GEN = dict(max_new_tokens=4, do_sample=False)
HOOK = "vision.blocks.22.hook_resid_post"


@pytest.fixture(scope="module")
def llava():
    return tiny_llava()


def _ours(modules) -> int:
    return saesteer_hooks(modules)


def _record(module, pre: bool = False):
    """Record the (first) input or the output of ``module`` at every call; returns (list, handle)."""
    seen: list[torch.Tensor] = []
    if pre:
        h = module.register_forward_pre_hook(
            lambda m, a, k: seen.append((a[0] if a else k["inputs_embeds"]).detach().clone()), with_kwargs=True)
    else:
        h = module.register_forward_hook(
            lambda m, a, o: seen.append((o if torch.is_tensor(o) else o[0]).detach().clone()))
    return seen, h


# ------------------------------------------------------------------------------ hook resolution
@pytest.mark.parametrize("vfl,hook", [(-2, HOOK), (-1, "vision.blocks.23.hook_resid_post"),
                                      (5, "vision.blocks.4.hook_resid_post"), (0, "vision.blocks.0.hook_resid_pre")])
def test_llava_default_hook_from_vision_feature_layer(vfl, hook):
    sm = saesteer.wrap(tiny_llava(vision_feature_layer=vfl), random_sae(d_in=D_VISION))
    att = sm.attachments[hook]
    assert att.point.tokens == "image" and att.point.image.cls_tokens == 1 and att.point.image.patches == N_PATCHES
    if vfl == -2:  # llava-1.5: hidden_states[-2] of 24 layers = output of encoder layer 22
        assert att.point.path == "model.vision_tower.encoder.layers.22"


def test_llava_hook_names_agree(llava):
    from saesteer.adapters import resolve

    names = [HOOK, "vision.blocks.-2.hook_resid_post", "model.vision_tower.encoder.layers.22",
             "vision_tower.encoder.layers.22"]
    assert {resolve(llava, n).name for n in names} == {HOOK}
    assert resolve(llava, "model.vision_tower.encoder.layers.3.mlp").name == "vision.blocks.3.hook_mlp_out"


@pytest.mark.parametrize("hook,msg", [
    ("model.language_model.layers.0", "outside the vision tower"),
    ("lm_head", "outside the vision tower"),
    ("model.multi_modal_projector", "outside the vision tower"),
    ("blocks.1.hook_resid_post", "ambiguous"),
    ("vision.blocks.23.hook_resid_post", "comes after what LLaVA reads"),
    ("vision.blocks.24.hook_resid_post", "past the last layer"),
    ("model.vision_tower.post_layernorm", "not a layer"),
])
def test_llava_refuses_hooks_it_must_not_place(llava, hook, msg):
    with pytest.raises(HookError, match=msg):
        saesteer.wrap(llava, random_sae(d_in=D_VISION), hook=hook)


def test_width_mismatch_and_multi_layer_config():
    llava = tiny_llava()
    with pytest.raises(HookError, match="does not match the width 32"):
        saesteer.wrap(llava, random_sae(d_in=16))
    multi = tiny_llava(vision_feature_layer=[-2, -5])
    with pytest.raises(HookError, match="reads several vision layers"):
        saesteer.wrap(multi, random_sae(d_in=D_VISION))
    sm = saesteer.wrap(multi, random_sae(d_in=D_VISION), hook="vision.blocks.19.hook_resid_post")
    b = llava_inputs(1)
    assert not torch.equal(sm(**b, edits={3: 6.0}).logits, multi(**b).logits)


# ------------------------------------------------------------------------------ LLaVA steering
def test_llava_zero_edit_bit_exact(llava):
    b = llava_inputs(2)
    ref_logits, ref_gen = llava(**b).logits, llava.generate(**b, **GEN)
    sm = saesteer.wrap(llava, random_sae(d_in=D_VISION))
    assert torch.equal(sm(**b).logits, ref_logits)
    assert torch.equal(sm(**b, edits=[{}, {}]).logits, ref_logits)  # hooks on, nothing to edit
    assert torch.equal(sm.generate(**b, edits=[{}, None], **GEN), ref_gen)
    assert torch.equal(sm.generate(**b, **GEN), ref_gen)


@pytest.mark.parametrize("positions,changed", [
    (Positions.patches(1, 6, 15), [1, 6, 15]), ("patches", list(range(N_PATCHES))),
    ("all", list(range(N_PATCHES))), ("cls", []), (Positions.range((0, 3)), [0, 1]),
])
def test_projector_input_changes_only_at_selected_patches(llava, positions, changed):
    """What LLaVA feeds its projector (hidden_states[-2] with CLS dropped) carries the edit, exactly
    x + (v - f_i) W_dec[i], at the selected patches and nowhere else. The bare model runs first, so
    transformers' hidden-state recording hooks are already in place before saesteer's."""
    sae = random_sae(d_in=D_VISION)
    sm = saesteer.wrap(llava, sae)
    b = llava_inputs(2)
    proj_in, h1 = _record(llava.model.multi_modal_projector, pre=True)
    layer_out, h2 = _record(llava.model.vision_tower.encoder.layers[22])
    try:
        with torch.no_grad():
            llava(**b)
            sm(**b, edits={3: 6.0}, positions=positions)
    finally:
        h1.remove(), h2.remove()
    recorders = [h for h in llava.model.vision_tower.encoder.layers[22]._forward_hooks.values()
                 if getattr(h, "__name__", "") == "output_capturing_hook"]
    assert recorders  # transformers' own hidden-state recorder sits on the layer, registered before ours
    assert proj_in[0].shape[1] == N_PATCHES  # "default" strategy: CLS dropped
    x = layer_out[0][:, 1:]
    diff = (proj_in[1] - proj_in[0]).abs().amax(-1)  # [images, patches]
    others = [p for p in range(N_PATCHES) if p not in changed]
    assert diff[:, changed].gt(0).all() and diff[:, others].eq(0).all()
    f3 = sae.encode(x)[..., 3:4]
    expect = x + (6.0 - f3) * sae.W_dec[3]
    torch.testing.assert_close(proj_in[1][:, changed], expect[:, changed].detach(), atol=1e-5, rtol=1e-5)
    assert torch.equal(proj_in[1], layer_out[1][:, 1:])  # the recorded hidden state is the edited output


def test_language_model_sees_the_edit_only_through_image_tokens(llava):
    sm = saesteer.wrap(llava, random_sae(d_in=D_VISION))
    b = llava_inputs(2)
    embeds, h = _record(llava.model.language_model, pre=True)
    try:
        with torch.no_grad():
            plain = llava(**b, output_hidden_states=True)
            steered = sm(**b, edits={3: 6.0}, output_hidden_states=True)
    finally:
        h.remove()
    image = b["input_ids"] == llava.config.image_token_id
    moved = (embeds[1] - embeds[0]).abs().amax(-1) > 0
    assert torch.equal(moved, image)  # inputs_embeds differ exactly at the image tokens
    first = int(image[0].nonzero()[0])
    for hs0, hs1 in zip(plain.hidden_states, steered.hidden_states):  # causal: tokens before the image untouched
        assert torch.equal(hs0[:, :first], hs1[:, :first])
    assert not torch.allclose(plain.logits[:, -1], steered.logits[:, -1])


def test_no_saesteer_hook_on_the_language_model_during_a_call(llava):
    sm = saesteer.wrap(llava, random_sae(d_in=D_VISION))
    lm_side = [*llava.model.language_model.modules(), *llava.lm_head.modules(),
               *llava.model.multi_modal_projector.modules()]
    counts = []
    probe = llava.model.language_model.register_forward_pre_hook(
        lambda m, a: counts.append((_ours(lm_side), _ours(llava.modules()))))
    try:
        sm.generate(**llava_inputs(2), edits={3: 6.0}, **GEN)
        with sm.edits({3: 6.0}, positions="patches"):
            llava(**llava_inputs(1))
    finally:
        probe.remove()
    assert len(counts) == GEN["max_new_tokens"] + 1
    assert all(lm == 0 and total == 3 for lm, total in counts)  # top pre/post hooks + layer 22 only
    assert _ours(llava.modules()) == 0


def _rerun(sm, b, n_new, **kw):
    """Greedy decoding by full uncached forwards over the growing sequence, pixels at every step."""
    ids, mask, logits = b["input_ids"], b["attention_mask"], []
    for _ in range(n_new):
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        out = sm(input_ids=ids, attention_mask=mask, position_ids=pos, pixel_values=b["pixel_values"],
                 use_cache=False, **kw).logits[:, -1]
        logits.append(out)
        nxt = out.index_fill(-1, torch.tensor([IMAGE_TOKEN]), -torch.inf).argmax(-1, keepdim=True)  # as generate
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    return ids, torch.stack(logits, 1)


@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_generate_with_kv_cache_equals_uncached_steered_forward(llava, arch):
    sm = saesteer.wrap(llava, random_sae(d_in=D_VISION, architecture=arch))
    b = llava_inputs(2, image_tokens=[N_PATCHES, N_PATCHES])
    edits = [saesteer.Clamp(3, 6.0), saesteer.Erase(7, positions=Positions.patches(0, 5))]
    out = sm.generate(**b, edits=edits, output_logits=True, return_dict_in_generate=True, **GEN)
    ids, logits = _rerun(sm, b, GEN["max_new_tokens"], edits=edits)
    assert torch.equal(out.sequences, ids)
    torch.testing.assert_close(torch.stack(out.logits, 1), logits, atol=1e-4, rtol=1e-4)
    plain = llava.generate(**b, output_logits=True, return_dict_in_generate=True, **GEN)
    assert not torch.allclose(torch.stack(plain.logits, 1), logits, atol=1e-3)


def test_per_image_edits_in_a_batch(llava):
    sm = saesteer.wrap(llava, random_sae(d_in=D_VISION))
    b = llava_inputs(3)
    with torch.no_grad():
        plain = llava(**b).logits
        mixed = sm(**b, edits=[{3: 6.0}, None, [saesteer.Erase(5)]]).logits
        alone0 = sm(**{k: v[:1] for k, v in b.items()}, edits={3: 6.0}).logits
        alone2 = sm(**{k: v[2:] for k, v in b.items()}, edits=[saesteer.Erase(5)]).logits
    assert torch.equal(mixed[1], plain[1])  # the unedited image's row is bit-exact
    torch.testing.assert_close(mixed[0], alone0[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[2], alone2[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[0], plain[0])
    with pytest.raises(EditError, match="2 per-image edit sets but the call has 3 images"):
        sm(**b, edits=[{3: 6.0}, None])


def test_llava_next_per_image_edits_cover_all_crops():
    model = tiny_llava_next()
    sm = saesteer.wrap(model, random_sae(d_in=D_VISION))
    assert HOOK in sm.attachments
    b = llava_next_inputs(model, [(112, 112), (56, 112)])  # 5 and 3 crops
    out, h = _record(model.model.vision_tower.encoder.layers[22])
    try:
        with torch.no_grad():
            ref = model(**b).logits
            assert torch.equal(sm(**b, edits=[{}, {}]).logits, ref)
            sm(**b, edits=[None, {3: 6.0}])
    finally:
        h.remove()
    assert out[0].shape[0] == 8
    moved = (out[-1] - out[0]).abs().amax((1, 2)) > 0
    assert moved.tolist() == [False] * 5 + [True] * 3
    g = sm.generate(**b, edits=[None, {3: 6.0}], output_logits=True, return_dict_in_generate=True, **GEN)
    plain = model.generate(**b, output_logits=True, return_dict_in_generate=True, **GEN)
    assert torch.equal(torch.stack(g.logits, 1)[0], torch.stack(plain.logits, 1)[0])
    with sm.edits([None, {3: 6.0}]):  # the bare model's forward: rows come from its own call
        torch.testing.assert_close(model(**b).logits, sm(**b, edits=[None, {3: 6.0}]).logits)
    # the bare model's generate inside an edits block: transformers versions that encode images outside
    # any top-level forward leave no way to map rows to images, so it is refused, never guessed; versions
    # that encode them inside the prefill's forward are steered exactly like sm.generate
    try:
        with sm.edits([None, {3: 6.0}]):
            bare_in_block = model.generate(**b, output_logits=True, return_dict_in_generate=True, **GEN)
    except EditError as e:
        assert "cannot tell which image each of the 8 rows" in str(e)
    else:
        assert torch.equal(torch.stack(bare_in_block.logits, 1), torch.stack(g.logits, 1))
    assert _ours(model.modules()) == 0


# ------------------------------------------------------------------------------ image positions
def test_position_kinds_are_checked_before_the_model_runs(llava):
    sm = saesteer.wrap(llava, random_sae(d_in=D_VISION))
    b = llava_inputs(1)
    for bad, msg in [("prompt", "address text tokens"), ("generated", "address text tokens"),
                     (Positions.patches(N_PATCHES), "patch index 16 is out of range")]:
        with pytest.raises(EditError, match=msg):
            sm(**b, edits={3: 6.0}, positions=bad)
        with pytest.raises(EditError, match=msg):
            sm(**b, edits=[saesteer.Clamp(3, 6.0, positions=bad)])
    assert _ours(llava.modules()) == 0
    siglip = saesteer.wrap(tiny_siglip_vision(), random_sae(d_in=D_VISION), layer=2)
    with pytest.raises(EditError, match="no CLS token"):
        siglip(pixel_values=pixels(1), edits={3: 6.0}, positions="cls")
    from tiny import tiny_lm
    text = saesteer.wrap(tiny_lm(), random_sae(), layer=1)
    with pytest.raises(EditError, match="address image tokens"):
        text(input_ids=torch.tensor([[5, 6, 7]]), edits={3: 6.0}, positions="patches")


# ------------------------------------------------------------------------------ bare towers
@pytest.mark.parametrize("build,cls", [(tiny_clip_vision, 1), (tiny_siglip_vision, 0)])
def test_bare_vision_tower(build, cls):
    tower = build()
    pv = pixels(2)
    ref = tower(pixel_values=pv)
    sae = random_sae(d_in=D_VISION)
    sm = saesteer.wrap(tower, sae, hook="blocks.2.hook_resid_post")
    from saesteer.adapters import resolve
    assert {resolve(tower, n).name for n in ("encoder.layers.2", "vision.blocks.-2.hook_resid_post",
                                             "blocks.2.hook_resid_post")} == {"vision.blocks.2.hook_resid_post"}
    assert sm.attachments["vision.blocks.2.hook_resid_post"].point.image.cls_tokens == cls
    assert torch.equal(sm(pixel_values=pv).pooler_output, ref.pooler_output)
    assert torch.equal(sm(pixel_values=pv, edits=[{}, {}]).last_hidden_state, ref.last_hidden_state)
    out, h = _record(tower.encoder.layers[2])
    try:
        tower(pixel_values=pv)
        got = sm(pixel_values=pv, edits=[{3: 6.0}, None], positions=Positions.patches(0, 4),
                 output_hidden_states=True)
    finally:
        h.remove()
    x = out[0]
    expect = x.clone()
    t = [cls + 0, cls + 4]
    expect[0, t] = (x[0, t] + (6.0 - sae.encode(x[0, t])[..., 3:4]) * sae.W_dec[3]).detach()
    torch.testing.assert_close(out[1], expect, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.hidden_states[3], out[1])  # transformers' recorded hidden state carries the edit
    assert torch.equal(got.last_hidden_state[1], ref.last_hidden_state[1])
    with pytest.raises(HookError, match="past the last layer"):
        saesteer.wrap(build(), sae, hook="vision.blocks.4.hook_resid_post")
    with pytest.raises(HookError, match="does not match the width"):
        saesteer.wrap(build(), random_sae(d_in=8), layer=1)


@pytest.mark.parametrize("build", [tiny_clip, tiny_siglip])
def test_dual_encoder_image_embeddings_and_zero_shot_scores_change_under_an_edit(build):
    clip = build()
    sm = saesteer.wrap(clip, random_sae(d_in=D_VISION), layer=2)
    assert sm.attachments["vision.blocks.2.hook_resid_post"].point.path == "vision_model.encoder.layers.2"
    with pytest.raises(HookError, match="unknown hook"):  # a text tower too: say vision.
        saesteer.wrap(build(), random_sae(d_in=D_VISION), hook="blocks.2.hook_resid_post")
    pv = pixels(2)
    texts = torch.randint(3, 100, (3, 16))  # 3 prompts, 2 images: rows of an image hook are images
    with torch.no_grad():
        ref = clip(input_ids=texts, pixel_values=pv)
        out = sm(input_ids=texts, pixel_values=pv, edits=[{3: 8.0}, None])
        emb_ref = clip.get_image_features(pixel_values=pv).pooler_output
        with sm.edits({3: 8.0}, positions="patches"):
            emb = clip.get_image_features(pixel_values=pv).pooler_output
    assert torch.equal(out.text_embeds, ref.text_embeds)
    assert not torch.allclose(out.logits_per_image[0], ref.logits_per_image[0])
    assert torch.equal(out.logits_per_image[1], ref.logits_per_image[1])
    assert not torch.allclose(emb, emb_ref)
    assert torch.equal(sm(input_ids=texts, pixel_values=pv).logits_per_image, ref.logits_per_image)


# ------------------------------------------------------------------------------ sae-for-vlm
def _sae_for_vlm_checkpoint(folder, d=D_VISION, F=128, k=4, threshold=0.25, seed=11):
    """An ``ae.pt`` + ``config.json`` laid out exactly as sae-for-vlm's dictionary_learning fork writes
    them (MatroyshkaBatchTopKSAE state dict; trainer config with empty layer/lm_name/submodule_name)."""
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(F, d, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    sd = {"k": torch.tensor(k, dtype=torch.int), "threshold": torch.tensor(threshold),
          "group_sizes": torch.tensor([F // 4, F // 4, F // 2]), "W_enc": W_dec.T.clone() * 2,
          "b_enc": torch.randn(F, generator=g) * 0.1, "W_dec": W_dec, "b_dec": torch.randn(d, generator=g) * 0.1}
    trainer = {"trainer_class": "MatroyshkaBatchTopKTrainer", "dict_class": "MatroyshkaBatchTopKSAE", "lr": 1e-4,
               "steps": 10, "auxk_alpha": 1 / 32, "warmup_steps": 1000, "decay_start": 1000000,
               "threshold_beta": 0.999, "threshold_start_step": 1000, "top_k_aux": d // 2, "seed": None,
               "activation_dim": d, "dict_size": F, "group_fractions": [0.25, 0.25, 0.5],
               "group_weights": [1 / 3] * 3, "group_sizes": [F // 4, F // 4, F // 2], "k": k, "device": "cpu",
               "layer": "", "lm_name": "", "wandb_name": "BatchTopKSAE", "submodule_name": ""}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": trainer}, indent=4))
    return sd


def _their_encode(sd, x):  # MatroyshkaBatchTopKSAE.encode(x, use_threshold=True)
    post = torch.relu((x - sd["b_dec"]) @ sd["W_enc"] + sd["b_enc"])
    return post * (post > sd["threshold"])


def test_sae_for_vlm_checkpoint_loads_and_encodes_with_its_learned_threshold(tmp_path):
    sd = _sae_for_vlm_checkpoint(tmp_path / "trainer_0")
    sae = saesteer.load_sae(tmp_path / "trainer_0")
    assert sae.cfg.architecture == "jumprelu" and sae.cfg.source_architecture == "MatryoshkaBatchTopKSAE"
    assert sae.cfg.hook_name is None and sae.cfg.metadata["threshold"] == pytest.approx(0.25)
    x = torch.randn(3, 5, D_VISION)
    f = _their_encode(sd, x)
    assert f.gt(0).any() and (f == 0).any()
    torch.testing.assert_close(sae.encode(x).detach(), f)
    torch.testing.assert_close(sae(x).detach(), f @ sd["W_dec"] + sd["b_dec"])


@pytest.mark.parametrize("zero_others", [False, True])
def test_sae_for_vlm_semantics_by_name(tmp_path, zero_others):
    """``saesteer.sae_for_vlm`` reproduces their steering: layer 22's output replaced by
    decode(encode(h)) with f[:, :, i] = value at every token (and pre_zero), no error term."""
    sd = _sae_for_vlm_checkpoint(tmp_path / "trainer_0")
    llava = tiny_llava()
    vlm = saesteer.wrap(llava, tmp_path / "trainer_0")  # hook inferred from vision_feature_layer
    assert list(vlm.attachments) == [HOOK]
    b = llava_inputs(2)
    fix = {5: 40.0, 9: 30.0}

    def theirs(module, args, h):  # their CLIPEncoderLayerPostMlpResidual + SAEWrapper, as a hook
        f = _their_encode(sd, h)
        if zero_others:
            f = torch.zeros_like(f)
        for i, v in fix.items():
            f[:, :, i] = v
        return f @ sd["W_dec"] + sd["b_dec"]

    handle = llava.model.vision_tower.encoder.layers[22].register_forward_hook(theirs)
    try:
        with torch.no_grad():
            expect = llava(**b).logits
            expect_gen = llava.generate(**b, **GEN)
    finally:
        handle.remove()
    with torch.no_grad():
        got = vlm(**b, edits=saesteer.sae_for_vlm(fix, zero_others=zero_others)).logits
        default = vlm(**b, edits=fix).logits  # saesteer's error-preserving clamp differs
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=1e-4)
    assert torch.equal(vlm.generate(**b, edits=saesteer.sae_for_vlm(fix, zero_others=zero_others), **GEN), expect_gen)
    assert not torch.allclose(default, expect, atol=1e-3)
