"""Steered generation: KV-cached steps are steered exactly like a full forward; per-row edits in one
left-padded batch equal each row alone; positions prompt / generated / ranges."""

from __future__ import annotations

import pytest
import torch

import saesteer
from saesteer import Positions
from tiny import batch, random_sae, tiny_lm

N_NEW = 6


def _rerun(sm, ids, mask, n_new, **kw):
    """Greedy decoding by full forwards without cache over the growing sequence (position ids from
    the mask, as generate makes them: models with absolute position embeddings need them)."""
    logits = []
    for _ in range(n_new):
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate computes them
        out = sm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **kw).logits[:, -1]
        logits.append(out)
        nxt = out.argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return ids, torch.stack(logits, 1)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma2"])
@pytest.mark.parametrize("arch", ["relu", "topk"])
def test_kv_cache_equals_full_forward(model_type, arch):
    lm = tiny_lm(model_type)
    sm = saesteer.wrap(lm, random_sae(architecture=arch), layer=1)
    b = batch(B=2, T=6, left_pad=(2, 0))
    edits = [saesteer.Clamp(3, 6.0), saesteer.Add(9, 2.0, positions=Positions.range((4, 8)))]
    out = sm.generate(**b, edits=edits, max_new_tokens=N_NEW, do_sample=False,
                      output_logits=True, return_dict_in_generate=True)
    ids, logits = _rerun(sm, b["input_ids"], b["attention_mask"], N_NEW, edits=edits)
    assert torch.equal(out.sequences, ids)
    torch.testing.assert_close(torch.stack(out.logits, 1), logits, atol=1e-4, rtol=1e-4)
    # and the edits did something
    plain = lm.generate(**b, max_new_tokens=N_NEW, do_sample=False, output_logits=True,
                        return_dict_in_generate=True)
    assert not torch.allclose(torch.stack(plain.logits, 1), logits, atol=1e-3)


def test_generated_positions_only():
    """positions='generated' leaves the prompt's forward untouched and equals an explicit range
    from the prompt length in a cache-free re-run."""
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch(B=2, T=5)
    P = b["input_ids"].shape[1]
    out = sm.generate(**b, edits={4: 8.0}, positions="generated", max_new_tokens=N_NEW, do_sample=False,
                      output_logits=True, return_dict_in_generate=True)
    plain = lm.generate(**b, max_new_tokens=N_NEW, do_sample=False, output_logits=True,
                        return_dict_in_generate=True)
    # first new token comes from the prompt forward: identical to the unsteered model
    assert torch.equal(out.logits[0], plain.logits[0])
    ids, logits = _rerun(sm, b["input_ids"], b["attention_mask"], N_NEW, edits={4: 8.0},
                         positions=Positions.range((P, None)))
    assert torch.equal(out.sequences, ids)
    torch.testing.assert_close(torch.stack(out.logits, 1), logits, atol=1e-4, rtol=1e-4)
    assert not torch.equal(torch.stack(out.logits, 1), torch.stack(plain.logits, 1))


def test_prompt_positions_only():
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch(B=1, T=5)
    out = sm.generate(**b, edits={4: 8.0}, positions="prompt", max_new_tokens=N_NEW, do_sample=False,
                      output_logits=True, return_dict_in_generate=True)
    ids, logits = _rerun(sm, b["input_ids"], b["attention_mask"], N_NEW, edits={4: 8.0},
                         positions=Positions.range((0, 5)))
    assert torch.equal(out.sequences, ids)
    torch.testing.assert_close(torch.stack(out.logits, 1), logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "gpt_neox"])
def test_per_row_edits_equal_rows_alone(model_type):
    lm = tiny_lm(model_type)
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch(B=3, T=7, left_pad=(3, 0, 1))
    row_edits = [{5: 7.0}, None, [saesteer.Scale(2, 4.0), saesteer.Add(8, 3.0)]]
    together = sm.generate(**b, edits=row_edits, max_new_tokens=N_NEW, do_sample=False,
                           output_logits=True, return_dict_in_generate=True)
    fwd = sm(**b, edits=row_edits).logits
    for r in range(3):
        keep = b["attention_mask"][r].bool()
        one = {"input_ids": b["input_ids"][r : r + 1, keep], "attention_mask": b["attention_mask"][r : r + 1, keep]}
        alone = sm.generate(**one, edits=row_edits[r], max_new_tokens=N_NEW, do_sample=False,
                            output_logits=True, return_dict_in_generate=True)
        assert torch.equal(together.sequences[r, -N_NEW:], alone.sequences[0, -N_NEW:])
        torch.testing.assert_close(torch.stack(together.logits, 1)[r], torch.stack(alone.logits, 1)[0],
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fwd[r, keep], sm(**one, edits=row_edits[r]).logits[0], atol=1e-4, rtol=1e-4)


def test_per_row_with_num_return_sequences():
    """Per-row edits follow rows when generate expands the batch (repeat_interleave)."""
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch(B=2, T=5)
    out = sm.generate(**b, edits=[{5: 9.0}, None], max_new_tokens=4, do_sample=False, num_beams=2,
                      num_return_sequences=2)
    row1 = sm.generate(input_ids=b["input_ids"][1:], attention_mask=b["attention_mask"][1:], max_new_tokens=4,
                       do_sample=False, num_beams=2, num_return_sequences=2)
    assert torch.equal(out[2:], row1)


def test_nested_edits_combine():
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch()
    both = sm(**b, edits=[saesteer.Clamp(1, 3.0), saesteer.Add(6, 2.0)]).logits
    with sm.edits(saesteer.Clamp(1, 3.0)):
        nested = sm(**b, edits=saesteer.Add(6, 2.0)).logits
    torch.testing.assert_close(nested, both)


def test_reconstruct_mode():
    """mode='reconstruct' outputs decode(f') with no error term; zero_others keeps only named features."""
    lm = tiny_lm("llama")
    sae = random_sae()
    sm = saesteer.wrap(lm, sae, layer=0)
    layer1 = lm.model.layers[1]
    got = []
    h = layer1.register_forward_pre_hook(lambda m, a: got.append(a[0].detach().clone()))
    b = batch()
    try:
        with torch.no_grad():
            lm(**b)
            x = got[-1]
            f = sae.encode(x)
            sm(**b, edits={3: 5.0}, mode="reconstruct")
            f2 = f.clone()
            f2[..., 3] = 5.0
            torch.testing.assert_close(got[-1], sae.decode(f2), atol=1e-5, rtol=1e-5)
            sm(**b, edits={3: 5.0}, mode="reconstruct", zero_others=True)
            f3 = torch.zeros_like(f)
            f3[..., 3] = 5.0
            torch.testing.assert_close(got[-1], sae.decode(f3), atol=1e-5, rtol=1e-5)
            sm(**b, edits=saesteer.EditSet(mode="reconstruct"))  # pure splice
            torch.testing.assert_close(got[-1], sae(x), atol=1e-5, rtol=1e-5)
    finally:
        h.remove()


def test_generated_positions_without_cache():
    """generate(use_cache=False) re-runs the whole sequence each step; 'generated' still means the
    tokens after the prompt handed to generate."""
    lm = tiny_lm("llama")
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    b = batch(B=2, T=5, left_pad=(1, 0))
    kw = dict(edits={4: 8.0}, positions="generated", max_new_tokens=N_NEW, do_sample=False,
              output_logits=True, return_dict_in_generate=True)
    cached = sm.generate(**b, **kw)
    uncached = sm.generate(**b, use_cache=False, **kw)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.logits, 1), torch.stack(uncached.logits, 1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gemma3_text"])
@pytest.mark.parametrize("kind", ["prompt", "generated", "ranges"])
def test_one_unpadded_prompt_without_mask(model_type, kind):
    """The most common call: ONE prompt, input_ids only. transformers 5.24+ generate then passes no
    attention mask and no cache_position, and the cache under ``cache``: positions must come from
    position_ids / the cache, or every decoding step reads as position 0 (prompt steers everything,
    generated steers nothing)."""
    lm = tiny_lm(model_type)
    sm = saesteer.wrap(lm, random_sae(), layer=1)
    ids = batch(B=1, T=5)["input_ids"]
    P = ids.shape[1]
    spans = {"prompt": (0, P), "generated": (P, None), "ranges": (P + 1, P + 3)}
    pos = "prompt" if kind == "prompt" else "generated" if kind == "generated" else Positions.range(spans[kind])
    out = sm.generate(input_ids=ids, edits={4: 8.0}, positions=pos, max_new_tokens=N_NEW, do_sample=False,
                      output_logits=True, return_dict_in_generate=True)
    ref_ids, ref_logits = _rerun(sm, ids, torch.ones_like(ids), N_NEW, edits={4: 8.0},
                                 positions=Positions.range(spans[kind]))
    assert torch.equal(out.sequences, ref_ids)
    torch.testing.assert_close(torch.stack(out.logits, 1), ref_logits, atol=1e-4, rtol=1e-4)
    plain = lm.generate(input_ids=ids, max_new_tokens=N_NEW, do_sample=False, output_logits=True,
                        return_dict_in_generate=True)
    every = sm.generate(input_ids=ids, edits={4: 8.0}, max_new_tokens=N_NEW, do_sample=False,
                        output_logits=True, return_dict_in_generate=True)
    steered, bare, all_ = (torch.stack(o.logits, 1) for o in (out, plain, every))
    # what broke: 'prompt' equal to 'all', 'generated' equal to unsteered
    assert not torch.equal(steered, all_) if kind != "ranges" else True
    assert not torch.equal(steered, bare)
    if kind == "generated":
        assert torch.equal(steered[:, 0], bare[:, 0])  # the prompt's forward is untouched
