"""Conversations as a reward model reads them: render to text, tokenise, cut from the left, pad.

A conversation is one of:

- a string, read as it is (already formatted);
- a ``(prompt, response)`` pair of strings (the prompt may be empty: then only the response);
- a list of ``{"role": ..., "content": ...}`` messages.

Pairs and message lists go through the tokenizer's chat template when it has one (else
``"role: content"`` lines); trailing whitespace is removed, so the reward is read at the
end-of-turn token itself (SARM reads Llama-3's ``<|eot_id|>``; ChatML templates add a newline
after ``<|im_end|>`` that would otherwise be read instead).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import torch

from saesteer.errors import RewardError

Conversation = Union[str, Sequence[str], Sequence[Mapping[str, str]]]


def as_messages(prompt: str | None, response: str) -> list[dict[str, str]]:
    """``[user, assistant]`` messages (no user turn when the prompt is empty)."""
    msgs = [{"role": "user", "content": prompt}] if prompt else []
    return msgs + [{"role": "assistant", "content": response}]


def _check_messages(conv: Sequence[Any], where: str) -> list[dict[str, str]]:
    msgs = []
    for m in conv:
        if not isinstance(m, Mapping) or "content" not in m or "role" not in m:
            raise RewardError(f"{where}: messages must be {{'role': ..., 'content': ...}} mappings, got {m!r}")
        if not isinstance(m["content"], str):
            raise RewardError(f"{where}: message content must be a string, got {type(m['content']).__name__}")
        msgs.append({"role": str(m["role"]), "content": m["content"]})
    if not msgs or not any(m["content"].strip() for m in msgs):
        raise RewardError(f"{where}: the conversation is empty")
    return msgs


def render(conv: Conversation, tokenizer: Any, where: str = "conversation") -> str:
    """The text of one conversation (see the module docstring); raises RewardError when empty."""
    if isinstance(conv, str):
        text = conv
    elif isinstance(conv, (tuple, list)) and len(conv) == 2 and all(isinstance(c, str) or c is None for c in conv):
        prompt, response = conv
        if not response or not response.strip():
            raise RewardError(f"{where}: the response is empty")
        text = _template(as_messages(prompt, response), tokenizer)
    elif isinstance(conv, (tuple, list)):
        text = _template(_check_messages(conv, where), tokenizer)
    else:
        raise RewardError(
            f"{where}: expected a string, a (prompt, response) pair or a list of messages, got {type(conv).__name__}"
        )
    text = text.rstrip()
    if not text.strip():
        raise RewardError(f"{where}: the text is empty")
    return text


def _template(msgs: list[dict[str, str]], tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs)


@dataclass
class Batch:
    """Right-padded token ids, their mask and how many tokens each row lost to left truncation."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    truncated: list[int]


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id (eos when it has none, 0 as a last resort)."""
    for name in ("pad_token_id", "eos_token_id"):
        v = getattr(tokenizer, name, None)
        if isinstance(v, int):
            return v
    return 0


def tokenize(texts: Sequence[str], tokenizer: Any, max_length: int | None) -> Batch:
    """Tokenise rendered texts, keep the last ``max_length`` tokens of each (a warning says how many
    conversations were cut and by how much) and right-pad. A text that already starts with the BOS
    token (chat templates put it there) gets no second one. Cost: the tokenizer, once per text."""
    if tokenizer is None:
        raise RewardError("this reward model has no tokenizer: pass tokenizer= or call rewards(input_ids)")
    bos = getattr(tokenizer, "bos_token", None)
    rows, cut = [], []
    for t in texts:
        ids = list(tokenizer(t, add_special_tokens=not (bos and t.startswith(bos)))["input_ids"])
        if not ids:
            raise RewardError(f"the tokenizer gave no tokens for {t[:60]!r}")
        n = len(ids) - max_length if max_length is not None and len(ids) > max_length else 0
        rows.append(ids[n:])
        cut.append(n)
    if any(cut):
        k = sum(1 for n in cut if n)
        warnings.warn(
            f"{k} conversation(s) longer than the context ({max_length} tokens) were truncated from the "
            f"left (up to {max(cut)} tokens dropped); the reward is read at the kept end", stacklevel=3,
        )
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[b, : len(r)] = 1
    return Batch(ids, mask, cut)


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row, for left and right padding alike
    (SARM finds it from the pad id, which breaks when pad == eos, as in SmolLM2)."""
    m = attention_mask != 0
    if not bool(m.any(1).all()):
        raise RewardError("a row of the batch has no tokens (its attention mask is all zeros)")
    T = m.shape[1]
    return (torch.arange(T, device=m.device) * m).argmax(1)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Absolute positions of the tokens (left padding aware): ``cumsum(mask) - 1``, pads at 0."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)
