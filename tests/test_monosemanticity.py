"""The Monosemanticity Score on a hand-computed example and against the pairwise definition; per-image
feature activations, top-activating images and per-patch maps on a tiny CLIP tower."""

from __future__ import annotations

import math

import pytest
import torch

import saesteer
from saesteer.errors import SaesteerError
from saesteer.metrics import (embed_images, image_activations, image_features_embedder, monosemanticity_score,
                              patch_activation_map, top_images)
from tiny import random_sae
from tiny_vision import D_VISION, N_PATCHES, pixels, tiny_clip, tiny_clip_vision, tiny_llava


def _pairwise_ms(acts: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The definition, literally: a loop over image pairs n < m."""
    a = acts.double()
    a = (a - a.min(0).values) / (a.max(0).values - a.min(0).values)
    e = emb.double()
    N, F = a.shape
    num, den = torch.zeros(F, dtype=torch.float64), torch.zeros(F, dtype=torch.float64)
    for n in range(N):
        for m in range(n + 1, N):
            c = torch.nn.functional.cosine_similarity(e[n], e[m], dim=0)
            num += a[n] * a[m] * c
            den += a[n] * a[m]
    return torch.where(den > 0, num / den, torch.nan)


def test_ms_hand_computed():
    # images 1, 2, 3 embed at 90, 45 and 0 degrees: cos(1,2) = cos(2,3) = 1/sqrt 2, cos(1,3) = 0
    emb = torch.tensor([[5.0, 5.0], [0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    acts = torch.tensor([
        # f0: ã = [0, .5, 1, 1]   f1: dead   f2: one image   f3: ã = [0, 1, 1, 0]   f4: ã = [1, 1, 0, 0]
        [0.0, 3.0, 0.0, 1.0, 2.0],
        [2.0, 3.0, 0.0, 3.0, 2.0],
        [4.0, 3.0, 0.0, 3.0, 0.0],
        [4.0, 3.0, 7.0, 1.0, 0.0],
    ])
    ms = monosemanticity_score(acts, emb)
    r = 1 / math.sqrt(2)
    # f0: pairs (1,2) w .5 cos r, (1,3) w .5 cos 0, (2,3) w 1 cos r -> (.5 r + r) / 2
    assert ms[0].item() == pytest.approx(1.5 * r / 2, abs=1e-12)
    assert math.isnan(ms[1]) and math.isnan(ms[2])
    assert ms[3].item() == pytest.approx(r, abs=1e-12)
    assert ms[4].item() == pytest.approx(r, abs=1e-12)  # cos(image 0 at 45 deg, image 1 at 90 deg)


@pytest.mark.parametrize("chunk", [None, 7])
def test_ms_matches_the_pairwise_definition(chunk):
    g = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(25, 40, generator=g) - 0.8)  # sparse, a few dead columns
    acts[:, 5] = 0.0
    emb = torch.randn(25, 6, generator=g)
    got = monosemanticity_score(acts, emb, chunk=chunk)
    want = _pairwise_ms(acts, emb)
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.isnan(got[5])
    torch.testing.assert_close(got[~torch.isnan(got)], want[~torch.isnan(want)], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(monosemanticity_score(acts * 3 + 1, emb * 0.1, chunk=chunk), got,  # invariances
                               equal_nan=True, atol=1e-6, rtol=1e-6)


def test_ms_bad_input():
    with pytest.raises(SaesteerError, match="embeddings"):
        monosemanticity_score(torch.rand(4, 3), torch.rand(5, 2))
    with pytest.raises(SaesteerError, match="at least 2"):
        monosemanticity_score(torch.rand(1, 3), torch.rand(1, 2))


def test_image_activations_top_images_and_patch_map():
    tower = tiny_clip_vision()
    sae = random_sae(d_in=D_VISION)
    sm = saesteer.wrap(tower, sae, layer=2)
    batches = [pixels(3, seed=1), {"pixel_values": pixels(2, seed=2)}]
    seen, h = [], tower.encoder.layers[3].register_forward_pre_hook(lambda m, a: seen.append(1))
    try:
        mean_all = image_activations(sm, batches)
        max_patch = image_activations(sm, batches, positions="patches", reduce="max")
        cls = image_activations(sm, batches, positions="cls")
    finally:
        h.remove()
    assert not seen  # each forward is cut short after layer 2
    with torch.no_grad():  # hidden_states[3] = output of layer 2
        x = torch.cat([tower(pixel_values=pixels(3, seed=1), output_hidden_states=True).hidden_states[3],
                       tower(pixel_values=pixels(2, seed=2), output_hidden_states=True).hidden_states[3]])
    f = sae.encode(x).detach()
    torch.testing.assert_close(mean_all, f.mean(1))
    torch.testing.assert_close(max_patch, f[:, 1:].amax(1))
    torch.testing.assert_close(cls, f[:, 0])
    top = top_images(mean_all, features=[3, 9], k=2)
    assert top.indices[0].tolist() == mean_all[:, 3].argsort(descending=True)[:2].tolist()
    assert top.of(9)[0][0] == int(mean_all[:, 9].argmax())
    heat = patch_activation_map(sm, pixels(3, seed=1), 3)
    side = int(math.isqrt(N_PATCHES))
    assert heat.shape == (3, side, side)
    torch.testing.assert_close(heat.reshape(3, -1), f[:3, 1:, 3])


def test_image_metrics_on_llava_run_only_the_vision_tower():
    llava = tiny_llava()
    sm = saesteer.wrap(llava, random_sae(d_in=D_VISION))
    calls = []
    h = llava.model.language_model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        acts = image_activations(sm, [pixels(4)], positions="patches")
    finally:
        h.remove()
    assert acts.shape == (4, 64) and not calls


def test_embed_images_with_a_pluggable_encoder_and_ms_end_to_end():
    clip = tiny_clip()
    emb = embed_images(image_features_embedder(clip), [pixels(3, seed=1), pixels(3, seed=2)])
    assert emb.shape == (6, 16)
    torch.testing.assert_close(emb[:3], clip.get_image_features(pixel_values=pixels(3, seed=1)).pooler_output.detach())
    flat = embed_images(lambda pv: pv.flatten(1)[:, :10], [pixels(6)])  # any callable pixels -> [n, D]
    sm = saesteer.wrap(tiny_clip_vision(), random_sae(d_in=D_VISION), layer=1)
    acts = image_activations(sm, [pixels(3, seed=1), pixels(3, seed=2)])
    for e in (emb, flat):
        ms = monosemanticity_score(acts, e)
        ok = ms[~torch.isnan(ms)]
        assert ms.shape == (64,) and ok.numel() > 0 and ok.abs().le(1 + 1e-9).all()
