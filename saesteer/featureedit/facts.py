"""Facts as FeatureEdit reads them, and their tokenisation.

A fact is a prompt, the answer the model should continue it with, and optionally its subject:
``Fact("The capital of France is", " Paris", subject="France")``. A plain statement string is
split at its last word: ``"Alice Smith lives in Lyon."`` -> prompt ``"Alice Smith lives in"``,
answer ``" Lyon"`` (trailing ``.!?`` dropped), no subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

import torch

from saesteer.errors import EditError


@dataclass(frozen=True)
class Fact:
    """``prompt`` + ``answer`` (with its leading space) is the statement; ``subject`` names the
    part of the prompt the fact is about (used by ``positions="subject"``)."""

    prompt: str
    answer: str
    subject: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise EditError(f"a fact needs a non-empty prompt, got {self.prompt!r}")
        if not isinstance(self.answer, str) or not self.answer.strip():
            raise EditError(f"a fact needs a non-empty answer, got {self.answer!r} (prompt {self.prompt!r})")
        if self.subject is not None and self.subject not in self.prompt:
            raise EditError(f"subject {self.subject!r} does not occur in the prompt {self.prompt!r}")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"prompt": self.prompt, "answer": self.answer}
        if self.subject is not None:
            d["subject"] = self.subject
        return d


FactLike = Union[Fact, str, Sequence[str], Mapping[str, str]]


def as_fact(x: FactLike) -> Fact:
    """A :class:`Fact` from a Fact, a statement string, a ``(prompt, answer[, subject])`` tuple or a
    ``{"prompt", "answer", "subject"?}`` mapping."""
    if isinstance(x, Fact):
        return x
    if isinstance(x, str):
        text = x.strip().rstrip(".!?").rstrip()
        prompt, sep, last = text.rpartition(" ")
        if not sep or not prompt.strip():
            raise EditError(f"cannot split the statement {x!r} into a prompt and an answer word; "
                            "pass Fact(prompt, answer) or (prompt, answer)")
        return Fact(prompt, " " + last)
    if isinstance(x, Mapping):
        try:
            return Fact(x["prompt"], x["answer"], x.get("subject"))
        except KeyError:
            raise EditError(f"a fact mapping needs 'prompt' and 'answer'; got keys {sorted(x)}") from None
    if isinstance(x, (tuple, list)) and len(x) in (2, 3) and all(isinstance(s, str) for s in x):
        return Fact(*x)
    raise EditError(f"cannot read a fact from {x!r}: give a statement, (prompt, answer[, subject]) or a Fact")


def as_facts(xs: Iterable[FactLike] | FactLike | None, what: str) -> tuple[Fact, ...]:
    """Coerce a list of facts; raise EditError naming ``what`` when it is empty."""
    if xs is None:
        raise EditError(f"{what} is empty: give at least one statement")
    if isinstance(xs, (str, Fact, Mapping)):
        xs = [xs]
    facts = tuple(as_fact(x) for x in xs)
    if not facts:
        raise EditError(f"{what} is empty: give at least one statement")
    return facts


# ---------------------------------------------------------------------------------- tokens
def token_ids(tokenizer: Any, text: str, special: bool = True) -> list[int]:
    """Token ids of ``text`` (with the tokenizer's special tokens when ``special``)."""
    out = tokenizer(text, add_special_tokens=special)
    ids = out["input_ids"]
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    return [int(i) for i in ids]


def span_tokens(tokenizer: Any, text: str, start: int, stop: int) -> tuple[int, int]:
    """Token range ``[a, b)`` of ``tokenizer(text)`` covering characters ``[start, stop)``.

    Uses the tokenizer's offsets when it has them; otherwise counts the tokens of the prefixes
    ``text[:start]`` and ``text[:stop]`` (exact for tokenizers that split at those characters).
    """
    try:
        enc = tokenizer(text, return_offsets_mapping=True)
        offsets = enc.get("offset_mapping") if hasattr(enc, "get") else None
    except (TypeError, ValueError, NotImplementedError):
        offsets = None
    if offsets:
        hit = [i for i, (a, b) in enumerate(offsets) if b > a and a < stop and b > start]
        if hit:
            return hit[0], hit[-1] + 1
    a = len(token_ids(tokenizer, text[:start])) if start else len(token_ids(tokenizer, ""))
    b = len(token_ids(tokenizer, text[:stop]))
    return a, max(b, a + 1)


def subject_ranges(tokenizer: Any, text: str, subjects: Iterable[str]) -> list[tuple[int, int]]:
    """Token ranges of every occurrence of every subject string in ``text`` (absolute positions of
    ``tokenizer(text)``, as saesteer's positions count them)."""
    out: list[tuple[int, int]] = []
    for s in subjects:
        i = text.find(s)
        while s and i >= 0:
            out.append(span_tokens(tokenizer, text, i, i + len(s)))
            i = text.find(s, i + len(s))
    return sorted(set(out))


@dataclass
class FactBatch:
    """Right-padded ``prompt + answer`` token ids for a list of facts.

    ``answer_mask [B, T]`` marks the answer tokens; ``prompt_mask`` the prompt tokens;
    ``subject_mask`` the subject tokens (all False for facts with no subject).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_mask: torch.Tensor
    answer_mask: torch.Tensor
    subject_mask: torch.Tensor
    subject_ranges: list[list[tuple[int, int]]]


def fact_batch(tokenizer: Any, facts: Sequence[Fact], subjects: Sequence[str] | None = None,
               device: torch.device | str = "cpu") -> FactBatch:
    """Tokenise ``facts`` as ``ids(prompt) + ids(answer)`` (answer without special tokens), right
    padded. ``subjects`` (default: each fact's own subject) decides the subject tokens."""
    rows, lens, ranges = [], [], []
    for f in facts:
        p = token_ids(tokenizer, f.prompt)
        a = token_ids(tokenizer, f.answer, special=False)
        if not a:
            raise EditError(f"the answer {f.answer!r} of {f.prompt!r} tokenises to nothing")
        rows.append(p + a)
        lens.append((len(p), len(a)))
        subs = subjects if subjects is not None else ([f.subject] if f.subject else [])
        ranges.append(subject_ranges(tokenizer, f.prompt, subs))
    T = max(len(r) for r in rows)
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    B = len(rows)
    ids = torch.full((B, T), int(pad), dtype=torch.long)
    am = torch.zeros(B, T, dtype=torch.long)
    pm = torch.zeros(B, T, dtype=torch.bool)
    ansm = torch.zeros(B, T, dtype=torch.bool)
    sm = torch.zeros(B, T, dtype=torch.bool)
    for b, (r, (np_, na), rg) in enumerate(zip(rows, lens, ranges)):
        ids[b, : len(r)] = torch.tensor(r)
        am[b, : len(r)] = 1
        pm[b, :np_] = True
        ansm[b, np_: np_ + na] = True
        for s, e in rg:
            sm[b, s:e] = True
    sm &= pm
    return FactBatch(ids.to(device), am.to(device), pm.to(device), ansm.to(device), sm.to(device), ranges)


def answer_logprobs(logits: torch.Tensor, batch: FactBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log P(answer | prompt) [B], greedy_correct [B])`` from the logits of ``batch``: the sum of
    the answer tokens' log-probabilities, and whether every answer token is the argmax."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nxt = batch.input_ids[:, 1:]
    tok_lp = lp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
    m = batch.answer_mask[:, 1:]
    total = (tok_lp * m).sum(1)
    hit = (lp.argmax(-1) == nxt) | ~m
    return total, hit.all(1)


def chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
