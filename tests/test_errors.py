"""Bad input gets a clear error before the model is touched; dtype and device follow the layer."""

from __future__ import annotations

import math

import pytest
import torch

import saesteer
from saesteer.runtime.apply import edit_activations
from tiny import D, batch, random_sae, tiny_lm


@pytest.fixture
def lm_counted():
    lm = tiny_lm("llama")
    calls = []
    h = lm.model.layers[0].register_forward_hook(lambda m, a, o: calls.append(1))
    yield lm, calls
    h.remove()


def test_width_mismatch(lm_counted):
    lm, calls = lm_counted
    with pytest.raises(saesteer.HookError, match=r"d_in=16 does not match the width 32 of blocks.1.hook_resid_post"):
        saesteer.wrap(lm, random_sae(d_in=16), layer=1)
    assert not calls


def test_unknown_hook_lists_valid_names(lm_counted):
    lm, calls = lm_counted
    with pytest.raises(saesteer.HookError, match=r"unknown hook 'blocks.1.hook_nope'.*blocks.L.hook_resid_post.*0..2"):
        saesteer.wrap(lm, random_sae(), hook="blocks.1.hook_nope")
    with pytest.raises(saesteer.HookError, match="layer 3 is past the last layer"):
        saesteer.wrap(lm, random_sae(), layer=3)
    with pytest.raises(saesteer.HookError, match="hook="):
        saesteer.wrap(lm, random_sae())
    assert not calls


@pytest.mark.parametrize(
    "edits, match",
    [
        (lambda: {64: 1.0}, "out of range"),
        (lambda: {-1: 1.0}, ">= 0"),
        (lambda: {3: math.nan}, "finite"),
        (lambda: {3: math.inf}, "finite"),
        (lambda: [saesteer.Scale(3, float("inf"))], "finite"),
        (lambda: [saesteer.Steer(torch.ones(D + 1), 1.0)], "entries"),
        (lambda: [saesteer.Steer(torch.tensor([math.nan] * D), 1.0)], "non-finite"),
        (lambda: [saesteer.Clamp(3, 1.0, hook="blocks.0.hook_resid_post")], "no SAE attached"),
        (lambda: "clamp", "expected edits"),
    ],
)
def test_bad_edits_fail_before_forward(lm_counted, edits, match):
    lm, calls = lm_counted
    """Edits are checked as they are built or, at the latest, before the forward starts."""
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    with pytest.raises(saesteer.EditError, match=match):
        sm(**batch(), edits=edits())
    with pytest.raises(saesteer.EditError, match=match):
        sm.generate(**batch(), edits=edits(), max_new_tokens=2)
    with pytest.raises(saesteer.EditError, match=match):
        with sm.edits(edits()):
            pass
    assert not calls


def test_bad_positions_and_modes():
    with pytest.raises(saesteer.EditError):
        saesteer.Positions.range((5, 2))
    with pytest.raises(saesteer.EditError):
        saesteer.EditSet(mode="replace")
    with pytest.raises(saesteer.EditError, match="zero_others"):
        saesteer.EditSet(zero_others=True)


def test_several_saes_need_a_hook_per_edit(lm_counted):
    lm, _ = lm_counted
    sm = saesteer.wrap(lm, random_sae(), layer=0)
    sm.attach(random_sae(seed=5), layer=2)
    with pytest.raises(saesteer.EditError, match="say which"):
        sm(**batch(), edits={1: 2.0})
    b = batch()
    two = sm(**b, edits=[saesteer.Clamp(1, 2.0, hook="blocks.0.hook_resid_post"),
                         saesteer.Clamp(1, 2.0, hook="layers.2")]).logits
    one = sm(**b, edits=[saesteer.Clamp(1, 2.0, hook="blocks.0.hook_resid_post")]).logits
    assert not torch.allclose(one, two)


def test_bf16_model_gets_bf16_sae_and_fp32_override():
    lm = tiny_lm("llama").to(torch.bfloat16)
    sae = random_sae()
    sm = saesteer.wrap(lm, sae, layer=1)
    assert sm.sae.dtype == torch.bfloat16 and sae.dtype == torch.float32  # the caller's SAE is not modified
    b = batch()
    assert torch.equal(sm(**b).logits, lm(**b).logits)
    assert not torch.equal(sm(**b, edits={3: 8.0}).logits, lm(**b).logits)
    sm.unwrap()
    sm32 = saesteer.wrap(lm, sae, layer=1, sae_dtype=torch.float32)
    assert sm32.sae.dtype == torch.float32
    out = sm32(**b, edits={3: 8.0}).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "gated", "topk"])
@pytest.mark.parametrize("normalize", ["none", "layer_norm", "constant_norm_rescale"])
def test_fast_path_equals_full_path(arch, normalize):
    """Editing a few features via their encoder columns equals the full encode/decode path."""
    sae = random_sae(architecture=arch, normalize=normalize)
    x = torch.randn(2, 9, D) * 3
    idx = torch.tensor([2, 17, 40])
    full = sae.encode(x)
    torch.testing.assert_close(sae.encode_subset(x, idx), full[..., idx], atol=1e-6, rtol=1e-5)
    es = saesteer.EditSet((saesteer.Clamp(2, 4.0), saesteer.Scale(17, 0.5), saesteer.Add(40, 1.0)))
    ones = lambda p: torch.ones(2, 9, dtype=torch.bool)  # noqa: E731
    fast = edit_activations(sae, x, es, ones)
    f2 = full.clone()
    f2[..., 2] = 4.0
    f2[..., 17] *= 0.5
    f2[..., 40] += 1.0
    xn, shift, scale = sae.normalize(x)
    want = x + sae.decode(f2, shift, scale) - sae.decode(full, shift, scale)
    torch.testing.assert_close(fast, want, atol=1e-5, rtol=1e-5)


def test_hub_id_offline_fails_fast_and_clearly(lm_counted, monkeypatch):
    lm, calls = lm_counted
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(saesteer.HubUnavailableError, match="someone/some-sae"):
        saesteer.wrap(lm, sae="someone/some-sae", layer=1)
    assert not calls
