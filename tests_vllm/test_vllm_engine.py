"""saesteer inside vLLM (offline ``LLM``): the same edits give the same greedy tokens as the HF path,
per request, under chunked prefill and the prefix cache; bad requests never reach the model."""

from __future__ import annotations

import pytest
import torch

from saesteer.integrations import vllm as sv

N = 16
PROMPTS = ["The history of the sea is", "Write a short poem about a fox:", "def fibonacci(n):"]
#: name -> (edits in the JSON schema, unused)
EDITS = {
    "clamp": ({"clamp": {"1309": 160.0}}, {1309: 160.0}),
    "clamp_generated": ({"edits": [{"op": "clamp", "feature": 1309, "value": 120.0}], "positions": "generated"},
                        None),
    "erase": (None, None),  # the features strongest on the prompt's last token (found in the test)
    "add": ({"add": {"1309": 60.0}}, None),
    "reconstruct": ({"clamp": {"1309": 90.0}, "mode": "reconstruct"}, None),
    "ranges": ({"edits": [{"op": "clamp", "feature": 1309, "value": 150.0}], "positions": [[2, 4], [7, None]]},
               None),
}


def hf_edits(obj):
    """The HF path's edits for a JSON edit object (the shared schema)."""
    from saesteer.edit_schema import from_json

    return from_json(obj)


def ids_of(hf, text):
    return hf.tokenizer(text)["input_ids"]


def erase_top(hf, ids, k=16):
    """Erase the ``k`` features that fire hardest on the last prompt token (an erase that matters)."""
    fa = hf.sm.features(torch.tensor([ids]), top_k=k)
    return {"erase": [i for i, _ in fa.at(0, len(ids) - 1)]}


def run_vllm(llm, prompts_ids, edit_objs, n=N, **kw):
    from vllm.inputs import TokensPrompt

    params = [sv.sampling_params(e, max_tokens=n, temperature=0.0, logprobs=1, **kw) for e in edit_objs]
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts_ids], params, use_tqdm=False)
    res = []
    for o in outs:
        c = o.outputs[0]
        res.append((list(c.token_ids), [lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)]))
    return res


def close(a, b, tol=1e-3):
    return len(a) == len(b) and max((abs(x - y) for x, y in zip(a, b)), default=0.0) <= tol


def test_unsteered_vllm_equals_hf(llm, hf):
    ids = ids_of(hf, PROMPTS[0])
    (tok, lp), = run_vllm(llm, [ids], [None])
    want_tok, want_lp = hf(ids, None, N)
    assert tok == want_tok
    assert close(lp, want_lp)


@pytest.mark.parametrize("name", list(EDITS))
def test_steered_vllm_equals_steered_hf(llm, hf, name):
    obj, _ = EDITS[name]
    ids = ids_of(hf, PROMPTS[0])
    if obj is None:
        obj = erase_top(hf, ids)
    before = sv.stats(llm)[0]["attachments"]["blocks.15.hook_resid_post"]["steered_rows"]
    (tok, lp), = run_vllm(llm, [ids], [obj])
    want_tok, want_lp = hf(ids, hf_edits(obj), N)
    plain, _ = hf(ids, None, N)
    assert want_tok != plain, "the edit must change the greedy continuation, or this test proves nothing"
    assert tok == want_tok
    assert close(lp, want_lp), max(abs(x - y) for x, y in zip(lp, want_lp))
    assert sv.stats(llm)[0]["attachments"]["blocks.15.hook_resid_post"]["steered_rows"] > before


def test_mixed_batch_equals_each_alone(llm, hf):
    """Steered, differently steered and unsteered requests in one batch: each gets what it gets alone."""
    ids = [ids_of(hf, p) for p in PROMPTS]
    objs = [EDITS["clamp"][0], erase_top(hf, ids[1]), None, EDITS["clamp"][0]]
    prompts = [ids[0], ids[1], ids[2], ids[1]]
    together = run_vllm(llm, prompts, objs)
    for (tok, lp), p, o in zip(together, prompts, objs):
        (tok1, lp1), = run_vllm(llm, [p], [o])
        assert tok == tok1
        assert close(lp, lp1, 1e-4)
        want, _ = hf(p, None if o is None else hf_edits(o), N)
        assert tok == want


def test_unsteered_rows_are_bit_exact_beside_steered_ones(llm, hf):
    """The same batch with and without edits on its other requests: the unsteered request's logprobs are
    identical bit for bit (its rows are never written)."""
    ids = [ids_of(hf, p) for p in PROMPTS]
    kw = {"ignore_eos": True}  # same lengths, so the same schedule in both runs
    steered = run_vllm(llm, [ids[0], ids[2], ids[1]], [EDITS["clamp"][0], None, EDITS["add"][0]], **kw)
    plain = run_vllm(llm, [ids[0], ids[2], ids[1]], [None, None, None], **kw)
    assert steered[0][0] != plain[0][0]
    assert steered[1] == plain[1]


def test_chunked_prefill_is_steered_like_hf(llm, hf):
    """A prompt four times the step budget is prefilled in chunks; positions count across them."""
    from conftest import MAX_BATCHED

    text = " ".join(["The lighthouse keeper wrote in his log every night about the waves and the ships."] * 16)
    ids = ids_of(hf, text)
    assert len(ids) > 3 * MAX_BATCHED
    obj = {"edits": [{"op": "clamp", "feature": 1309, "value": 150.0}],
           "positions": [[MAX_BATCHED - 5, MAX_BATCHED + 5], [2 * MAX_BATCHED + 3, None]]}
    (tok, lp), = run_vllm(llm, [ids], [obj], n=10)
    want_tok, want_lp = hf(ids, hf_edits(obj), 10)
    assert want_tok != hf(ids, None, 10)[0]
    assert tok == want_tok
    assert close(lp, want_lp)


def test_prefix_cache_never_shares_steered_kv(llm, hf):
    """Unsteered first (its KV cached), then steered on the same long prompt, then unsteered again: each
    equals its own fresh result, so neither read the other's KV."""
    text = " ".join(["A quiet harbour town woke up to fog, gulls and the smell of bread."] * 6)
    ids = ids_of(hf, text)
    obj = EDITS["clamp"][0]
    (plain1, lp1), = run_vllm(llm, [ids], [None])
    (steer, slp), = run_vllm(llm, [ids], [obj])
    (plain2, lp2), = run_vllm(llm, [ids], [None])
    want_steer, want_slp = hf(ids, hf_edits(obj), N)
    assert steer == want_steer and close(slp, want_slp)
    assert plain1 == plain2 == hf(ids, None, N)[0]
    assert lp1 == lp2


def test_salt_follows_the_edits_and_the_prompt_length_when_positions_need_it():
    from saesteer.edit_schema import from_json
    from saesteer.integrations.vllm.plugin import salt

    a = from_json({"clamp": {"3": 5.0}})
    b = from_json({"clamp": {"3": 6.0}})
    g = from_json({"clamp": {"3": 5.0}, "positions": "generated"})
    assert salt(a, 10, None) == salt(a, 12, None) != salt(b, 10, None)
    assert salt(g, 10, None) != salt(g, 12, None)
    assert salt(a, 10, "user").startswith("user|") and salt(a, 10, "user") != salt(a, 10, None)


@pytest.mark.parametrize("bad, words", [
    ("{not json", "not valid JSON"),
    ({"clamp": {"99999": 5.0}}, "99999"),
    ({"edits": [{"op": "shout", "feature": 3}]}, "op"),
    ({"edits": [{"op": "clamp", "feature": 3, "value": 1.0, "hook": "blocks.3.hook_resid_post"}]},
     "no SAE attached"),
    ({"clamp": {"3": 1e300}}, "1e+300"),
    ({"positions": "patches", "clamp": {"3": 1.0}}, "positions"),
])
def test_bad_requests_are_refused_before_the_model_runs(llm, hf, bad, words):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError
    from vllm.inputs import TokensPrompt

    before = sv.stats(llm)[0]["forwards"]
    with pytest.raises(VLLMValidationError) as err:
        llm.generate([TokensPrompt(prompt_token_ids=ids_of(hf, PROMPTS[0]))],
                     SamplingParams(max_tokens=4, extra_args={"saesteer": bad}), use_tqdm=False)
    assert "saesteer" in str(err.value) and words in str(err.value)
    assert sv.stats(llm)[0]["forwards"] == before
    (tok, _), = run_vllm(llm, [ids_of(hf, PROMPTS[0])], [None], n=4)  # the engine still serves
    assert len(tok) == 4


def test_attach_refuses_a_second_sae_at_the_same_hook_and_a_bad_hook(llm, paths):
    from saesteer.errors import HookError

    with pytest.raises(Exception, match="already attached"):
        sv.attach(llm, paths[1])
    with pytest.raises(Exception, match="unknown hook|past the last layer"):
        sv.attach(llm, paths[1], "blocks.99.hook_resid_post")
    assert list(sv.stats(llm)[0]["attachments"]) == ["blocks.15.hook_resid_post"]
    assert HookError  # the worker raises HookError; collective_rpc may wrap it


def test_compiled_or_extensionless_engines_are_refused(paths):
    """vLLM's compiled mode never runs Python hooks: refused at attach and at admission, by config."""
    from vllm.engine.arg_utils import EngineArgs

    from saesteer.errors import CompiledModelError, SaesteerError
    from saesteer.integrations.vllm.plugin import admit
    from saesteer.integrations.vllm.worker import refuse_compiled

    compiled = EngineArgs(model=paths[0], dtype="float32", max_model_len=512,
                          worker_extension_cls=sv.EXTENSION).create_engine_config()
    with pytest.raises(CompiledModelError, match="enforce_eager"):
        refuse_compiled(compiled)
    with pytest.raises(CompiledModelError):
        admit(compiled, {"clamp": {"3": 1.0}})
    bare = EngineArgs(model=paths[0], dtype="float32", max_model_len=512, enforce_eager=True).create_engine_config()
    with pytest.raises(SaesteerError, match="worker extension"):
        admit(bare, {"clamp": {"3": 1.0}})
