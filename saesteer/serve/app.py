"""``saesteer serve``: an OpenAI-compatible HTTP server for a steered HF model.

Endpoints: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions`` (OpenAI request and response
shapes; ``stream: true`` as server-sent events; ``max_tokens``, ``temperature``, ``top_p``, ``seed``,
``stop``, ``logprobs``), with edits in the body as ``"saesteer": {...}`` (what the ``openai`` client
sends for ``extra_body={"saesteer": ...}``; schema: :mod:`saesteer.edit_schema`), and
``/v1/saesteer/features?search=``, ``/v1/saesteer/features/{i}``, ``/v1/saesteer/activations``.

Every request is checked before it is queued (OpenAI-style JSON error, status 400, the model never
sees it); requests that arrive together share one batched generate (:mod:`saesteer.serve.batcher`).
Binds 127.0.0.1 unless told; with an API key every request needs ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from saesteer.edit_schema import SchemaLimits, from_json
from saesteer.errors import SaesteerError
from saesteer.serve.batcher import Batcher, Job


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for (the demo's limits by default)."""

    max_prompt_chars: int = 8000
    max_prompt_tokens: int = 1024
    max_tokens: int = 256
    max_edits: int = 8
    max_abs_value: float = 1000.0
    max_abs_scale: float = 100.0
    max_top_logprobs: int = 20


class BadRequest(SaesteerError, ValueError):
    """A request the server refuses (HTTP 400) before it reaches the model."""


def _num(body: dict, key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise BadRequest(f"{key} must be a number in [{lo:g}, {hi:g}], got {v!r}")
    return float(v)


class Server:
    """The state behind the endpoints: one SteeredModel, its tokenizer, the batcher, the limits."""

    def __init__(self, steered: Any, tokenizer: Any, *, model_id: str, limits: ServeLimits = ServeLimits(),
                 max_batch: int = 16, api_key: str | None = None, window_s: float = 0.1) -> None:
        self.sm, self.tok, self.model_id, self.limits, self.api_key = steered, tokenizer, model_id, limits, api_key
        self.batcher = Batcher(steered, tokenizer, max_batch=max_batch, window_s=window_s)

    # ------------------------------------------------------------------ request -> job
    def prompt_ids(self, body: dict, chat: bool) -> list[int]:
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in msgs):
                raise BadRequest("messages must be a non-empty list of {role, content} objects with string content")
            chars = sum(len(m["content"]) for m in msgs)
            text = None
        else:
            text = body.get("prompt")
            if isinstance(text, list) and len(text) == 1:
                text = text[0]
            if not isinstance(text, str) or not text:
                raise BadRequest("prompt must be a non-empty string (one prompt per request)")
            chars = len(text)
        if chars > self.limits.max_prompt_chars:
            raise BadRequest(f"the prompt has {chars} characters; this server takes at most {self.limits.max_prompt_chars}")
        if chat:
            if getattr(self.tok, "chat_template", None):
                text = self.tok.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in msgs],
                                                    tokenize=False, add_generation_prompt=True)
                ids = self.tok(text, add_special_tokens=False)["input_ids"]
            else:
                ids = self.tok("\n".join(f"{m['role']}: {m['content']}" for m in msgs) + "\nassistant:")["input_ids"]
        else:
            ids = self.tok(text)["input_ids"]
        if len(ids) > self.limits.max_prompt_tokens:
            raise BadRequest(f"the prompt is {len(ids)} tokens; this server takes at most {self.limits.max_prompt_tokens}")
        return list(ids)

    def job(self, body: Any, chat: bool) -> tuple[Job, list[str]]:
        """The checked job of one request body, and its stop strings; BadRequest when anything is off."""
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        lim = self.limits
        n = body.get("n", 1)
        if n != 1:
            raise BadRequest("n must be 1 (one completion per request)")
        mt = body.get("max_completion_tokens", body.get("max_tokens", 16 if not chat else lim.max_tokens))
        if isinstance(mt, bool) or not isinstance(mt, int) or not 1 <= mt <= lim.max_tokens:
            raise BadRequest(f"max_tokens must be a whole number in [1, {lim.max_tokens}], got {mt!r}")
        temperature = _num(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _num(body, "top_p", 1.0, 1e-6, 1.0)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadRequest(f"seed must be a whole number, got {seed!r}")
        stop = body.get("stop")
        stop = [stop] if isinstance(stop, str) else (stop or [])
        if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise BadRequest("stop must be a string or a list of at most 4 non-empty strings")
        logprobs = self._logprobs(body, chat)
        try:
            edits = from_json(body.get("saesteer"), SchemaLimits(lim.max_edits, lim.max_abs_value, lim.max_abs_scale))
            self.sm.plan(edits)  # indices, hooks, dtype range: checked against the attached SAE now
        except SaesteerError as e:
            raise BadRequest(str(e)) from None
        job = Job(self.prompt_ids(body, chat), edits, mt, temperature, top_p, seed, logprobs)
        return job, stop

    def _logprobs(self, body: dict, chat: bool) -> int | None:
        lp = body.get("logprobs")
        if chat:
            if lp in (None, False):
                return None
            if lp is not True:
                raise BadRequest("logprobs must be true or false for chat completions")
            k = body.get("top_logprobs", 0) or 0
        else:
            if lp is None:
                return None
            k = lp
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.limits.max_top_logprobs:
            raise BadRequest(f"top logprobs must be a whole number in [0, {self.limits.max_top_logprobs}], got {k!r}")
        return k

    # ------------------------------------------------------------------ job -> response
    def run(self, job: Job, stop: list[str]) -> Iterator[tuple[str, Any]]:
        """``("text", delta, logprobs)`` pieces as the job's tokens arrive, then ``("done", reason)``;
        stop strings cut the text (and end the request) where they first appear."""
        self.batcher.submit(job)
        ids: list[int] = []
        sent = ""
        pending_lp: list[Any] = []
        while True:
            kind, value = job.out.get(timeout=600)
            if kind == "error":
                raise value
            if kind == "logprobs":
                pending_lp.extend(value)
                continue
            if kind == "done":
                yield ("done", value, None)
                return
            ids.extend(value)
            text = self.tok.decode(ids, skip_special_tokens=True)
            cut = min((text.find(s) for s in stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
            if text.endswith("\ufffd") and cut < 0:  # half a multi-byte character: wait for the rest
                continue
            delta, sent = text[len(sent):], text
            yield ("text", delta, pending_lp)
            pending_lp = []
            if cut >= 0:
                job.finished = True  # the batch may go on; this request takes no more tokens
                yield ("done", "stop", None)
                return

    def token_text(self, i: int) -> str:
        return self.tok.decode([i])

    def check_key(self, header: str | None) -> bool:
        return self.api_key is None or header == f"Bearer {self.api_key}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"
