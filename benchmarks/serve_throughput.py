"""Throughput of ``saesteer serve``: 1, 4 and 16 concurrent clients, batched vs one request at a time,
steered vs unsteered, measured side by side in one run over HTTP with the ``openai`` client.

Two servers share one SmolLM2-135M-Instruct + bundled SAE in this process (uvicorn threads on
127.0.0.1): one batches up to 16 requests per generate, one serves a request at a time
(``--max-batch 1``). Each row sends ``clients`` concurrent greedy requests of ``--tokens`` new tokens,
``--rounds`` times; figures are generated tokens per second of wall time (the median of the rounds),
and the batched / one-at-a-time ratio per row. Target (issue 19): 16 clients >= 4x.

    python benchmarks/serve_throughput.py [--tokens 32] [--rounds 3] [--dtype float32]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(server) -> str:  # noqa: ANN001
    import uvicorn

    from saesteer.serve.http import build_app

    port = _free_port()
    cfg = uvicorn.Config(build_app(server), host="127.0.0.1", port=port, log_level="warning")
    th = threading.Thread(target=uvicorn.Server(cfg).run, daemon=True)
    th.start()
    time.sleep(1.5)
    return f"http://127.0.0.1:{port}/v1"


PROMPTS = ["Tell me about the sea.", "Write a short poem about autumn.", "What is a neural network?",
           "Give me three tips for sleeping well.", "Describe a city at night.", "Why is the sky blue?",
           "How do bees make honey?", "Name a famous painting and describe it."]


def _round(url: str, clients: int, tokens: int, steer: dict | None) -> tuple[float, int]:
    import openai

    done: list[int] = []

    def one(i: int) -> None:
        c = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                                      max_tokens=tokens, temperature=0,
                                      extra_body={"saesteer": steer} if steer else None)
        done.append(r.usage.completion_tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, sum(done)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--clients", default="1,4,16")
    a = p.parse_args()
    import torch

    from saesteer.serve import make_server
    from saesteer.serve.app import Server

    torch.set_num_threads(torch.get_num_threads())
    batched = make_server("smollm2", dtype=a.dtype, max_batch=16)
    single = Server(batched.sm, batched.tok, model_id="smollm2", max_batch=1)
    urls = {"batched": _start(batched), "one at a time": _start(single)}
    feat = batched.sm.sae.labels.search("shakespeare", top=1)[0].feature
    steer = {"clamp": {str(feat): 2 * float(batched.sm.sae.labels.info(feat)["max_activation"])}}
    _round(urls["batched"], 2, 4, None)  # warm-up (first calls allocate)
    print(f"saesteer serve throughput: SmolLM2-135M-Instruct + bundled SAE, {a.dtype}, greedy, {a.tokens} new tokens "
          f"per request, median of {a.rounds} rounds, torch threads {torch.get_num_threads()}")
    print(f"{'clients':>7} {'edits':>9} | {'batched tok/s':>13} {'one-at-a-time tok/s':>20} | {'ratio':>6} | batches seen")
    for clients in [int(c) for c in a.clients.split(",")]:
        for label, edits in (("none", None), ("clamp", steer)):
            rates: dict[str, float] = {}
            seen = len(batched.batcher.batches)
            for name in ("batched", "one at a time"):
                r = []
                for _ in range(a.rounds):
                    wall, toks = _round(urls[name], clients, a.tokens, edits)
                    r.append(toks / wall)
                rates[name] = statistics.median(r)
            sizes = batched.batcher.batches[seen:]
            print(f"{clients:>7} {label:>9} | {rates['batched']:>13.1f} {rates['one at a time']:>20.1f} | "
                  f"{rates['batched'] / rates['one at a time']:>5.2f}x | max {max(sizes)}, mean {statistics.mean(sizes):.1f}")


if __name__ == "__main__":
    import os
    import sys

    main()
    sys.stdout.flush()
    os._exit(0)  # the uvicorn threads are daemons: skip the interpreter's teardown of them
