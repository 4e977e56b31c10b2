"""``saesteer serve`` in a subprocess on a free port, spoken to by the official ``openai`` client:
steered and unsteered chat and completion requests, streaming and not, equal the library's own
greedy generate; 16 concurrent clients with different edits each get their own result, served in
shared batches; bad requests get 400s and the server goes on; without the key, 401."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")

import saesteer  # noqa: E402
from tiny import VOCAB, random_sae, tiny_lm  # noqa: E402

KEY = "test-key-123"
MAX_TOKENS = 6


def _build(root: Path) -> tuple[Path, Path]:
    """A tiny llama with a word-level tokenizer (ids 0..95 are <pad>, <s>, </s>, w3..w95) and a chat
    template, and a random SAE at its layer 1, saved as a user would have them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tk = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", bos_token="<s>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}w3"
    tok.save_pretrained(root / "lm")
    lm = tiny_lm("llama")
    lm.save_pretrained(root / "lm")
    sae = random_sae(d_sae=64)
    sae.cfg.hook_name = "blocks.1.hook_resid_post"
    saesteer.save_sae(sae, root / "sae")
    return root / "lm", root / "sae"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    lm_dir, sae_dir = _build(root)
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "saesteer.cli", "serve", "--model", str(lm_dir), "--sae",
                             str(sae_dir), "--port", str(port), "--api-key", KEY, "--max-batch", "16",
                             "--max-tokens-limit", "32"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
            urllib.request.urlopen(req, timeout=2)
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None:
                raise RuntimeError((root / "server.log").read_text())
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("the server did not start: " + (root / "server.log").read_text())
    yield url, lm_dir, sae_dir
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def library(server):
    """The same model and SAE in-process: what each request must equal."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, lm_dir, sae_dir = server
    tok = AutoTokenizer.from_pretrained(lm_dir)
    sm = saesteer.wrap(AutoModelForCausalLM.from_pretrained(lm_dir).eval(), str(sae_dir), tokenizer=tok)

    def generate(prompt: str, edits=None, chat: bool = False, n: int = MAX_TOKENS) -> str:
        if chat:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        else:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
        out = sm.generate(input_ids=ids, edits=edits, max_new_tokens=n, do_sample=False, pad_token_id=0)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    return generate


def _client(url: str, key: str = KEY):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


PROMPTS = ["w5 w6 w7", "w10 w11 w12 w13 w14", "w20", "w40 w41 w42", "w50 w51"]


def test_completions_steered_and_not_equal_the_library(server, library):
    url = server[0]
    c = _client(url)
    assert [m.id for m in c.models.list().data] == [str(server[1])]
    for prompt in PROMPTS[:3]:
        plain = c.completions.create(model="m", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
        assert plain.choices[0].text == library(prompt)
        steered = c.completions.create(model="m", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                       extra_body={"saesteer": {"edits": [{"op": "clamp", "feature": 3, "value": 9.0}]}})
        assert steered.choices[0].text == library(prompt, saesteer.Clamp(3, 9.0))
        assert steered.choices[0].text != plain.choices[0].text
        assert steered.usage.completion_tokens == MAX_TOKENS


def test_chat_streaming_equals_non_streaming_equals_the_library(server, library):
    c = _client(server[0])
    edits = {"clamp": {"7": 6.0}, "positions": "generated"}
    whole = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "w8 w9"}],
                                      max_tokens=MAX_TOKENS, temperature=0, extra_body={"saesteer": edits})
    parts = list(c.chat.completions.create(model="m", messages=[{"role": "user", "content": "w8 w9"}],
                                           max_tokens=MAX_TOKENS, temperature=0, stream=True,
                                           extra_body={"saesteer": edits}))
    streamed = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    want = library("w8 w9", saesteer.Clamp(7, 6.0, positions="generated"), chat=True)
    assert whole.choices[0].message.content == streamed == want
    assert parts[-1].choices[0].finish_reason == "length" and len(parts) >= MAX_TOKENS


def test_logprobs_and_stop(server, library):
    c = _client(server[0])
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "w5"}], max_tokens=4,
                                  temperature=0, logprobs=True, top_logprobs=3)
    lps = r.choices[0].logprobs.content
    assert len(lps) == 4 and all(e.logprob <= 0 and len(e.top_logprobs) == 3 for e in lps)
    assert all(e.top_logprobs[0].logprob >= e.logprob - 1e-6 for e in lps)  # greedy: the chosen token is the top one
    full = library("w5 w6 w7", n=MAX_TOKENS)
    second = full.split()[1]
    r = c.completions.create(model="m", prompt="w5 w6 w7", max_tokens=MAX_TOKENS, temperature=0, stop=[second])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].text == full[:full.find(second)]


def test_sixteen_concurrent_clients_each_get_their_own_result_in_shared_batches(server, library):
    url = server[0]
    jobs = [(PROMPTS[i % len(PROMPTS)], None if i % 4 == 0 else i % 11) for i in range(16)]
    want = [library(p, None if f is None else saesteer.Clamp(f, 8.0)) for p, f in jobs]
    got: list[str | None] = [None] * 16
    before = json.loads(urllib.request.urlopen(urllib.request.Request(
        url + "/v1/saesteer/stats", headers={"Authorization": f"Bearer {KEY}"})).read())["batches"]

    def one(i: int) -> None:
        p, f = jobs[i]
        body = {} if f is None else {"saesteer": {"clamp": {str(f): 8.0}}}
        got[i] = _client(url).completions.create(model="m", prompt=p, max_tokens=MAX_TOKENS, temperature=0,
                                                 extra_body=body).choices[0].text

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == want
    after = json.loads(urllib.request.urlopen(urllib.request.Request(
        url + "/v1/saesteer/stats", headers={"Authorization": f"Bearer {KEY}"})).read())["batches"]
    new = after[len(before):]
    assert sum(new) == 16 and max(new) > 1, new  # requests shared batched generates


@pytest.mark.parametrize("body,why", [
    ({"prompt": "w5", "max_tokens": 1000}, "max_tokens"),
    ({"prompt": "w5", "saesteer": {"clamp": {"300": 1.0}}}, "out of range"),
    ({"prompt": "w5", "saesteer": {"edits": [{"op": "melt", "feature": 1}]}}, "op must be one of"),
    ({"prompt": "w5", "saesteer": {"clamp": {"3": 1e9}}}, "within"),
    ({"prompt": "w5", "saesteer": {"edits": [{"op": "clamp", "feature": 3.5, "value": 1}]}}, "whole number"),
    ({"prompt": "w5", "saesteer": {"clamp": {str(i): 1.0 for i in range(20)}}}, "at most 8"),
    ({"prompt": "", "max_tokens": 3}, "prompt"),
    ({"prompt": "w5", "temperature": -1}, "temperature"),
    ({"prompt": "w5", "saesteer": "clamp everything"}, "saesteer must be an object"),
])
def test_bad_requests_are_400_and_the_server_goes_on(server, library, body, why):
    c = _client(server[0])
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model="m", **{k: v for k, v in body.items() if k != "saesteer"},
                             extra_body={"saesteer": body["saesteer"]} if "saesteer" in body else None)
    assert why in str(e.value)
    ok = c.completions.create(model="m", prompt="w5 w6 w7", max_tokens=MAX_TOKENS, temperature=0)
    assert ok.choices[0].text == library("w5 w6 w7")


def test_malformed_json_and_missing_key(server):
    url = server[0]
    req = urllib.request.Request(url + "/v1/completions", data=b"{not json", method="POST",
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400 and "not JSON" in json.loads(e.value.read())["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        _client(url, key="wrong").models.list()


def test_feature_endpoints(server):
    url = server[0]
    get = lambda path: json.loads(urllib.request.urlopen(urllib.request.Request(  # noqa: E731
        url + path, headers={"Authorization": f"Bearer {KEY}"})).read())
    assert get("/v1/saesteer/features/3")["feature"] == 3
    req = urllib.request.Request(url + "/v1/saesteer/activations", data=json.dumps({"text": "w5 w6", "top_k": 3}).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    acts = json.loads(urllib.request.urlopen(req).read())
    assert acts["hook"] == "blocks.1.hook_resid_post" and len(acts["tokens"]) == 2
    assert all(len(t["features"]) <= 3 for t in acts["tokens"])
    with pytest.raises(urllib.error.HTTPError) as e:  # this SAE has no labels: a clear 404
        get("/v1/saesteer/features?search=sea")
    assert e.value.code == 404


def test_explain_llm_through_the_server_equals_the_local_one(server):
    """``saesteer explain --llm openai:URL``: the OpenAI-compatible backend, spoken to a real server,
    answers and scores as the same model loaded locally (greedy text; the judge's two-choice
    probabilities from the endpoint's top-5 log-probs)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saesteer.explain.llm import HFChatLLM, OpenAIChatLLM, load_llm

    url, lm_dir, _ = server
    tok = AutoTokenizer.from_pretrained(lm_dir)
    local = HFChatLLM(AutoModelForCausalLM.from_pretrained(lm_dir).eval(), tok)
    remote = load_llm("openai:" + url + "/v1", model="m", api_key=KEY)
    assert isinstance(remote, OpenAIChatLLM)
    msgs = [{"role": "user", "content": "w5 w6 w7"}]
    assert remote.chat(msgs, max_tokens=5) == local.chat(msgs, max_tokens=5) != ""
    with torch.no_grad():
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        logits = local.model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, -1]
    choices = [tok.decode([int(i)]) for i in logits.topk(2).indices]
    got, want = remote.choice_probs(msgs, choices), local.choice_probs(msgs, choices)
    assert got is not None and set(got) == set(choices)
    assert all(abs(got[c] - want[c]) < 1e-4 for c in choices), (got, want)
    assert OpenAIChatLLM(url + "/v1", "m", api_key="wrong").name.startswith("m @")
    with pytest.raises(openai.AuthenticationError):
        OpenAIChatLLM(url + "/v1", "m", api_key="wrong").chat(msgs, max_tokens=2)
