"""What an erasure changed and what it did not: reliability, generality, locality, perplexity.

For a group of facts with answer probabilities ``p0`` (unedited) and ``p1`` (edited), where
``p = P(answer | prompt)`` is the product of the answer tokens' probabilities:

- ``reliability`` (the edited facts) and ``generality`` (their paraphrases):
  ``1 - sum(p1) / sum(p0)``, the relative drop of the mean answer probability
  (1 = the answer is gone, 0 = unchanged, negative = it became more likely).
- ``locality`` (contrast facts, unrelated facts): ``1 - sum|p1 - p0| / sum(p0)``
  (1 = every probability unchanged; moves up and down both count).
- accuracy before/after: the share of facts whose every answer token is the greedy choice.
- ``delta_ppl``: perplexity of held-out text with the edit minus without it (same tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from saesteer.errors import EditError
from saesteer.featureedit.facts import Fact, FactLike, answer_logprobs, as_fact, chunks, fact_batch, subject_ranges, token_ids
from saesteer.featureedit.select import model_device

#: edits for a batch, given each row's subject token ranges: an edit spec for ``model(edits=...)``
EditsFor = Callable[[list[list[tuple[int, int]]]], Any]

#: report groups: probe field -> (row name, headline metric)
GROUPS = {"target": "reliability", "paraphrases": "generality", "contrast": "locality", "unrelated": "locality"}


@dataclass
class Probes:
    """What to measure an edit on. ``target`` and ``contrast`` default to the edit's own facts."""

    target: Sequence[FactLike] | None = None
    paraphrases: Sequence[FactLike] = ()
    contrast: Sequence[FactLike] | None = None
    unrelated: Sequence[FactLike] = ()
    heldout: Sequence[str] = ()

    @classmethod
    def coerce(cls, probes: "Probes | Mapping[str, Any] | None") -> "Probes":
        if probes is None:
            return cls()
        if isinstance(probes, Probes):
            return probes
        if isinstance(probes, Mapping):
            unknown = set(probes) - {"target", "paraphrases", "contrast", "unrelated", "heldout"}
            if unknown:
                raise EditError(f"unknown probe groups {sorted(unknown)}; use target, paraphrases, contrast, "
                                "unrelated, heldout")
            return cls(**probes)
        raise EditError(f"probes must be a Probes or a mapping, got {type(probes).__name__}")


@dataclass
class GroupResult:
    """One group of facts: answer probabilities and greedy accuracy without and with the edit."""

    name: str
    metric: str
    p0: list[float]
    p1: list[float]
    correct0: list[bool]
    correct1: list[bool]
    facts: tuple[Fact, ...] = field(default=(), repr=False)

    @property
    def n(self) -> int:
        return len(self.p0)

    @property
    def score(self) -> float:
        """The group's headline metric (see the module doc)."""
        s0 = sum(self.p0)
        if s0 == 0:
            return float("nan")
        if self.metric == "locality":
            return 1.0 - sum(abs(b - a) for a, b in zip(self.p0, self.p1)) / s0
        return 1.0 - sum(self.p1) / s0

    @property
    def mean_p0(self) -> float:
        return sum(self.p0) / self.n

    @property
    def mean_p1(self) -> float:
        return sum(self.p1) / self.n

    @property
    def acc0(self) -> float:
        return sum(self.correct0) / self.n

    @property
    def acc1(self) -> float:
        return sum(self.correct1) / self.n


@dataclass
class EditReport:
    """The evaluation of one edit; ``print(report)`` shows the table."""

    groups: dict[str, GroupResult] = field(default_factory=dict)
    ppl0: float | None = None
    ppl1: float | None = None
    heldout_tokens: int = 0
    title: str = ""
    heldout_key: Any = field(default=None, repr=False)
    heldout_nll0: list[tuple[float, int]] = field(default_factory=list, repr=False)

    def _score(self, name: str) -> float | None:
        g = self.groups.get(name)
        return g.score if g is not None else None

    @property
    def reliability(self) -> float | None:
        return self._score("target")

    @property
    def generality(self) -> float | None:
        return self._score("paraphrases")

    @property
    def locality_contrast(self) -> float | None:
        return self._score("contrast")

    @property
    def locality_unrelated(self) -> float | None:
        return self._score("unrelated")

    @property
    def delta_ppl(self) -> float | None:
        return None if self.ppl0 is None or self.ppl1 is None else self.ppl1 - self.ppl0

    def to_dict(self) -> dict[str, Any]:
        return {"reliability": self.reliability, "generality": self.generality,
                "locality_contrast": self.locality_contrast, "locality_unrelated": self.locality_unrelated,
                "ppl_before": self.ppl0, "ppl_after": self.ppl1, "delta_ppl": self.delta_ppl,
                "heldout_tokens": self.heldout_tokens,
                "groups": {k: {"n": g.n, "metric": g.metric, "score": g.score, "p_before": g.mean_p0,
                               "p_after": g.mean_p1, "acc_before": g.acc0, "acc_after": g.acc1}
                           for k, g in self.groups.items()}}

    def __str__(self) -> str:
        head = f"{'group':<12} {'n':>4} {'metric':<12} {'score':>7} {'P(ans) before':>14} {'after':>8} " \
               f"{'acc before':>10} {'after':>6}"
        lines = ([self.title] if self.title else []) + [head, "-" * len(head)]
        for k, g in self.groups.items():
            lines.append(f"{k:<12} {g.n:>4} {g.metric:<12} {g.score:>7.3f} {g.mean_p0:>14.4f} {g.mean_p1:>8.4f} "
                         f"{g.acc0:>10.2f} {g.acc1:>6.2f}")
        if self.ppl0 is not None:
            lines.append(f"perplexity on {self.heldout_tokens} held-out tokens: {self.ppl0:.3f} -> {self.ppl1:.3f} "
                         f"(delta {self.delta_ppl:+.3f})")
        return "\n".join(lines)


@torch.no_grad()
def fact_probs(model: Any, tokenizer: Any, facts: Sequence[Fact], edits_for: EditsFor | None,
               subjects: Sequence[str], batch_size: int = 16) -> tuple[list[float], list[bool]]:
    """``P(answer | prompt)`` and greedy correctness per fact, with the edit (``edits_for``) or
    without it (None). Cost: one forward per batch."""
    dev = model_device(model.model)
    ps: list[float] = []
    ok: list[bool] = []
    for sl in chunks(len(facts), batch_size):
        b = fact_batch(tokenizer, facts[sl], subjects=subjects, device=dev)
        edits = edits_for(b.subject_ranges) if edits_for is not None else None
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False, edits=edits).logits
        lp, hit = answer_logprobs(logits, b)
        ps += [math.exp(float(v)) for v in lp]
        ok += [bool(v) for v in hit]
    return ps, ok


@torch.no_grad()
def heldout_nll(model: Any, tokenizer: Any, texts: Sequence[str], edits_for: EditsFor | None,
                subjects: Sequence[str], max_tokens: int = 128, batch_size: int = 8) -> list[tuple[float, int]]:
    """Per text: summed next-token negative log-likelihood and token count (each text cut to
    ``max_tokens`` tokens; texts shorter than 2 tokens count 0). Cost: one forward per batch."""
    dev = model_device(model.model)
    rows = [token_ids(tokenizer, t)[:max_tokens] for t in texts]
    out: list[tuple[float, int]] = [(0.0, 0)] * len(texts)
    keep = [i for i, r in enumerate(rows) if len(r) >= 2]
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    for sl in chunks(len(keep), batch_size):
        part = keep[sl]
        T = max(len(rows[i]) for i in part)
        ids = torch.full((len(part), T), int(pad), dtype=torch.long)
        am = torch.zeros(len(part), T, dtype=torch.long)
        for j, i in enumerate(part):
            ids[j, : len(rows[i])] = torch.tensor(rows[i])
            am[j, : len(rows[i])] = 1
        ids, am = ids.to(dev), am.to(dev)
        edits = None
        if edits_for is not None:
            edits = edits_for([subject_ranges(tokenizer, texts[i], subjects) for i in part])
        logits = model(input_ids=ids, attention_mask=am, use_cache=False, edits=edits).logits
        lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        m = am[:, 1:].bool()
        for j, i in enumerate(part):
            out[i] = (-float((lp[j] * m[j]).sum()), int(m[j].sum()))
    return out


def _edited(n: int, touched: Callable[[int], bool] | None, run: Callable[[list[int]], list], base: list) -> list:
    """``run`` on the items ``touched`` (all when None); the others keep their unedited ``base``
    value (an untouched row of a steered batch is bit-exact with the bare model)."""
    idx = [i for i in range(n) if touched is None or touched(i)]
    out = list(base)
    for i, v in zip(idx, run(idx) if idx else []):
        out[i] = v
    return out


def evaluate(model: Any, tokenizer: Any, edits_for: EditsFor, subjects: Sequence[str], probes: Probes,
             *, default_target: Sequence[Fact], default_contrast: Sequence[Fact], subject_only: bool = False,
             baseline: EditReport | None = None, max_heldout_tokens: int = 128, batch_size: int = 16,
             title: str = "") -> EditReport:
    """Measure an edit on ``probes`` (see the module doc).

    ``subject_only``: the edit touches only texts that contain a subject, so the others are not run
    again. ``baseline``: an earlier report on the same probes (same facts, texts and token limit),
    whose unedited numbers are reused. Cost: one forward per batch of probes with the edit, and one
    without it unless ``baseline`` has it."""
    report = EditReport(title=title)
    for name, metric in GROUPS.items():
        raw = getattr(probes, name)
        if raw is None:
            raw = default_target if name == "target" else default_contrast if name == "contrast" else ()
        facts = tuple(as_fact(f) for f in raw)
        if not facts:
            continue
        old = baseline.groups.get(name) if baseline is not None else None
        if old is not None and old.facts == facts:
            p0, c0 = old.p0, old.correct0
        else:
            p0, c0 = fact_probs(model, tokenizer, facts, None, subjects, batch_size)
        def run(idx: list[int], facts: tuple[Fact, ...] = facts) -> list:
            return list(zip(*fact_probs(model, tokenizer, [facts[i] for i in idx], edits_for, subjects, batch_size)))

        def has_subject(i: int, facts: tuple[Fact, ...] = facts) -> bool:
            return bool(subject_ranges(tokenizer, facts[i].prompt, subjects))

        p1, c1 = map(list, zip(*_edited(len(facts), has_subject if subject_only else None, run, list(zip(p0, c0)))))
        report.groups[name] = GroupResult(name, metric, p0, p1, c0, c1, facts)
    texts = tuple(t for t in probes.heldout if isinstance(t, str) and t.strip())
    if texts:
        key = (texts, max_heldout_tokens)
        hb = max(1, batch_size // 2)
        if baseline is not None and baseline.heldout_key == key:
            n0 = baseline.heldout_nll0
        else:
            n0 = heldout_nll(model, tokenizer, texts, None, subjects, max_heldout_tokens, hb)
        def run_texts(idx: list[int]) -> list:
            return heldout_nll(model, tokenizer, [texts[i] for i in idx], edits_for, subjects, max_heldout_tokens, hb)

        def text_has_subject(i: int) -> bool:
            return bool(subject_ranges(tokenizer, texts[i], subjects))

        n1 = _edited(len(texts), text_has_subject if subject_only else None, run_texts, n0)
        k = sum(c for _, c in n0)
        if k:
            report.ppl0 = math.exp(sum(v for v, _ in n0) / k)
            report.ppl1 = math.exp(sum(v for v, _ in n1) / k)
            report.heldout_tokens, report.heldout_key, report.heldout_nll0 = k, key, n0
    return report
