"""``saesteer.integrations.nnsight.steer`` inside an nnsight trace gives the same tensors as
saesteer's own hooks: the edited activation, the next layer's input, the logits, per-row edits,
other hook points, and KV-cached generation step by step."""

from __future__ import annotations

import pytest
import torch

nnsight = pytest.importorskip("nnsight")

import saesteer  # noqa: E402
from saesteer.integrations.nnsight import steer  # noqa: E402
from tiny import VOCAB, batch, random_sae, tiny_lm  # noqa: E402

EDITS = [saesteer.Clamp(3, 5.0), saesteer.Scale(7, 0.25), saesteer.Add(11, 2.0)]
ATOL = dict(atol=1e-5, rtol=1e-5)


def _tokenizer():
    """A word-level tokenizer over the tiny vocabulary, built offline (``w3 w17 ...``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", bos_token="<s>",
                                   eos_token="</s>", unk_token="[PAD]")


def _lm():
    lm = tiny_lm("llama")
    lm.generation_config.eos_token_id = None
    return lm


@pytest.fixture(scope="module")
def nn_model():
    cls = getattr(nnsight, "TransformersModel", None) or nnsight.LanguageModel
    return cls(_lm(), tokenizer=_tokenizer())


@pytest.fixture
def b():
    return batch(left_pad=(2,))


def _reference(hook: str, b: dict, position_ids: torch.Tensor, edits, **kw):
    """saesteer's own hooks on an identical model: (logits, what layer 2 receives)."""
    sm = saesteer.wrap(_lm(), random_sae(), hook=hook)
    got: list[torch.Tensor] = []
    h = sm.model.model.layers[2].register_forward_pre_hook(
        lambda m, a, k: got.append((a[0] if a else k["hidden_states"]).clone()), with_kwargs=True)
    try:
        with torch.no_grad():
            logits = sm(**b, position_ids=position_ids, edits=edits, **kw).logits
    finally:
        h.remove()
    return logits, got[0]


def test_zero_edits_return_the_tensor_itself(nn_model, b):
    x = torch.randn(2, 5, 32)
    sae = random_sae()
    for none in (None, {}, []):
        assert steer(x, sae, none) is x
    tup = (x, "other")
    assert steer(tup, sae, None) is tup
    with nn_model.trace(b):
        bare = nn_model.output.logits.save()
    with nn_model.trace(b):
        layer = nn_model.model.layers[1]
        layer.output = steer(layer.output, sae, None)
        same = nn_model.output.logits.save()
    assert torch.equal(bare, same)


@pytest.mark.parametrize("form", ["assign", "inplace"])
def test_layer_output_matches_saesteer_hooks(nn_model, b, form):
    sae = random_sae()
    with nn_model.trace(b):
        kw = nn_model.inputs[1]  # top-level inputs come first in forward order
        am, pos = kw["attention_mask"], kw["position_ids"].save()
        layer = nn_model.model.layers[1]
        x = layer.output
        bare_x = x.clone().save()
        y = steer(x, sae, EDITS, attention_mask=am)
        if form == "assign":
            layer.output = y
        else:
            layer.output[:] = y
        into_next = nn_model.model.layers[2].input.save()
        logits = nn_model.output.logits.save()
    want_logits, want_next = _reference("blocks.1.hook_resid_post", b, pos, EDITS)
    torch.testing.assert_close(into_next, want_next, **ATOL)
    torch.testing.assert_close(logits, want_logits, **ATOL)
    assert not torch.allclose(into_next, bare_x, atol=1e-3)
    assert torch.equal(into_next[0, :2], bare_x[0, :2])  # padding is never steered


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"])
def test_other_hook_points(nn_model, b, hook):
    sae = random_sae()
    kwargs = dict(positions=[(3, None)], mode="reconstruct", zero_others=True)
    with nn_model.trace(b):
        kw = nn_model.inputs[1]
        am, pos = kw["attention_mask"], kw["position_ids"].save()
        if hook.endswith("resid_pre"):
            layer = nn_model.model.layers[1]
            layer.input = steer(layer.input, sae, EDITS, attention_mask=am, **kwargs)
        else:
            mlp = nn_model.model.layers[1].mlp
            mlp.output = steer(mlp.output, sae, EDITS, attention_mask=am, **kwargs)
        logits = nn_model.output.logits.save()
    want, _ = _reference(hook, b, pos, EDITS, **kwargs)
    torch.testing.assert_close(logits, want, **ATOL)


def test_per_row_edits(nn_model, b):
    sae = random_sae()
    rows = [EDITS, None]
    with nn_model.trace(b):
        kw = nn_model.inputs[1]
        am, pos = kw["attention_mask"], kw["position_ids"].save()
        layer = nn_model.model.layers[1]
        layer.output = steer(layer.output, sae, rows, attention_mask=am)
        logits = nn_model.output.logits.save()
    want, _ = _reference("blocks.1.hook_resid_post", b, pos, rows)
    torch.testing.assert_close(logits, want, **ATOL)


def test_kv_cached_generate_step_by_step(nn_model, b):
    sae, n = random_sae(), 4
    prompt = b["attention_mask"].sum(1)
    with nn_model.generate(b, max_new_tokens=n, do_sample=False) as tracer:
        steps = nnsight.save([])
        for _ in tracer.iter[:n]:
            am = nn_model.inputs[1]["attention_mask"]
            layer = nn_model.model.layers[1]
            layer.output = steer(layer.output, sae, EDITS, attention_mask=am, positions="generated",
                                 prompt_length=prompt)
            steps.append(nn_model.output.logits[:, -1].clone())
        ids = tracer.result.save()
    sm = saesteer.wrap(_lm(), random_sae(), layer=1)
    ref = sm.generate(**b, max_new_tokens=n, do_sample=False, edits=EDITS, positions="generated",
                      output_scores=True, return_dict_in_generate=True)
    bare = _lm().generate(**b, max_new_tokens=n, do_sample=False, output_scores=True,
                          return_dict_in_generate=True)
    assert torch.equal(ids, ref.sequences) and len(steps) == n
    for got, want in zip(steps, ref.scores):
        torch.testing.assert_close(got, want, **ATOL)
    torch.testing.assert_close(steps[0], bare.scores[0], **ATOL)  # the prompt is not steered
    assert not torch.allclose(steps[-1], bare.scores[-1], atol=1e-3)


def test_bad_input_fails_before_the_math(b):
    sae = random_sae()
    x = torch.randn(2, 7, 32)
    with pytest.raises(saesteer.EditError):
        steer(x, sae, {10_000: 1.0})
    with pytest.raises(saesteer.EditError):
        steer(x, sae, {3: 1.0}, attention_mask=torch.ones(3, 7))
    with pytest.raises(TypeError):
        steer("not a tensor", sae, {3: 1.0})
