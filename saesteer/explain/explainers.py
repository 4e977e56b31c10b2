"""Explainers: a one-shot explanation from top-activating contexts (delphi's default style), and a
SAGE-style loop that proposes hypotheses, writes probe texts for each, reads the feature's activation
on them through saesteer, and refines.

The loop is **saesteer's reading of SAGE** (Han et al., EACL 2026 Industry): the paper's hypothesis
count, iteration cap, stopping rule and scoring formulas are not confirmed (SEED_METHODS.md section 9).
Here, each hypothesis gets a *loop score* = mean of (a) generative accuracy: the share of its probe
texts on which the feature fires, and (b) predictive accuracy: delphi detection's balanced accuracy on a
held-in set (train examples vs non-activating ones; never the test set that the final scores use).
The best hypothesis is refined with the probe feedback until the loop score stops improving
(``patience`` rounds) or the budget of LLM calls is spent. Every step is logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from saesteer.explain.examples import Example, Split
from saesteer.explain.llm import LLM
from saesteer.explain.scorers import FUZZ_THRESHOLD, detection, highlight

SYSTEM_EXPLAIN = ("You explain what a feature of a language model detects. You get text excerpts in which the "
                  "feature fires; the tokens where it fires most are highlighted <<like this>>. Describe in one "
                  "short phrase what the highlighted tokens have in common, considering their context.")


def _show(examples: Sequence[Example], n: int) -> str:
    top = max((e.max_act for e in examples), default=0.0)
    lines = []
    for i, e in enumerate(examples[:n]):
        lines.append(f"Excerpt {i + 1}: " + highlight(e, [a >= FUZZ_THRESHOLD * top and a > 0 for a in e.acts]))
    return "\n".join(lines)


def clean_explanation(answer: str) -> str:
    """The explanation in an LLM answer: the text after an ``Explanation:`` marker when there is one,
    else the first non-empty line, stripped of quotes and list marks; at most 200 characters."""
    m = re.search(r"explanation\]?\s*:\s*(.+)", answer, flags=re.I | re.S)
    text = m.group(1) if m else answer
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(?:[-*\d.)]+\s*)", "", line).strip().strip("\"'` ")
    return line[:200] or "unknown"


def one_shot(llm: LLM, split: Split, *, n_examples: int = 20, max_tokens: int = 40) -> str:
    """An explanation from the top of the feature's train examples (highest quantile first), in one
    LLM call. Cost: one ``chat`` of about ``n_examples x 40`` prompt tokens."""
    msgs = [{"role": "system", "content": SYSTEM_EXPLAIN},
            {"role": "user", "content": _show(split.train, n_examples) + "\n\nExplanation:"}]
    return clean_explanation(llm.chat(msgs, max_tokens=max_tokens))


@dataclass
class LoopStep:
    """One logged step of :func:`sage_loop`."""

    round: int
    action: str                 # "propose", "refine"
    hypothesis: str
    probes: list[tuple[str, float]] = field(default_factory=list)  # (probe text, feature's max activation)
    generative: float = 0.0     # share of probes that fire
    predictive: float = 0.0     # held-in detection balanced accuracy
    score: float = 0.0          # loop score: mean of the two
    decision: str = ""          # "best so far", "rejected", ...


@dataclass
class LoopResult:
    explanation: str
    score: float
    steps: list[LoopStep]
    calls: int
    stopped: str                # why the loop ended

    def to_json(self) -> dict[str, Any]:
        return {"explanation": self.explanation, "loop_score": self.score, "calls": self.calls, "stopped": self.stopped,
                "steps": [s.__dict__ for s in self.steps]}


class _Budget:
    def __init__(self, llm: LLM, max_calls: int) -> None:
        self.llm, self.max_calls, self.calls = llm, max_calls, 0

    def left(self, n: int = 1) -> bool:
        return self.calls + n <= self.max_calls

    def chat(self, msgs: list[dict[str, str]], **kw: Any) -> str:
        self.calls += 1
        return self.llm.chat(msgs, **kw)


def _probe_texts(b: _Budget, hypothesis: str, n: int) -> list[str]:
    msgs = [{"role": "system", "content": "You write short test sentences."},
            {"role": "user", "content": f"Write {n} different short sentences that clearly contain: {hypothesis}. "
                                        "One per line, no numbering."}]
    lines = [re.sub(r"^\s*(?:[-*\d.)]+\s*)", "", ln).strip() for ln in b.chat(msgs, max_tokens=30 * n).splitlines()]
    return [ln for ln in lines if len(ln) > 3][:n]


def sage_loop(llm: LLM, split: Split, probe: Callable[[Sequence[str]], list[float]], *, n_hypotheses: int = 3,
              n_probes: int = 4, held_in: int = 10, max_calls: int = 80, max_rounds: int = 3, patience: int = 1,
              log: Callable[[LoopStep], None] | None = None) -> LoopResult:
    """saesteer's reading of SAGE (module doc). ``probe(texts)`` returns the feature's largest activation
    on each text (:func:`saesteer.explain.examples.max_activations`). Hypotheses: the first is the
    one-shot explanation of the top train examples, the others of successive quantile slices (each a
    different view of the feature). Held-in detection reads ``held_in`` train examples against as many
    of ``split.train_negatives``: the test set is never seen. Cost: at most ``max_calls`` LLM calls (each hypothesis: 1 to propose,
    1 to write probes, ``2 * held_in`` for held-in detection) and one model forward per probe text."""
    b = _Budget(llm, max_calls)
    held = Split([], split.train[:held_in], list(split.train_negatives[:held_in]), split.n_activating)
    steps: list[LoopStep] = []
    per_hyp = 2 + 2 * held_in

    def evaluate(hyp: str, rnd: int, action: str) -> LoopStep:
        texts = _probe_texts(b, hyp, n_probes)
        acts = probe(texts) if texts else []
        gen = sum(a > 0 for a in acts) / n_probes
        det = detection(_Counted(b), hyp, held).scores["balanced_accuracy"]
        s = LoopStep(rnd, action, hyp, list(zip(texts, acts)), gen, det, (gen + det) / 2)
        steps.append(s)
        return s

    best: LoopStep | None = None
    n = len(split.train)
    for h in range(n_hypotheses):
        if not b.left(per_hyp):
            break
        lo = h * n // max(n_hypotheses, 1)
        view = Split(split.train[lo:] + split.train[:lo], [], [], split.n_activating)
        hyp = clean_explanation(b.chat([{"role": "system", "content": SYSTEM_EXPLAIN},
                                        {"role": "user", "content": _show(view.train, 12) + "\n\nExplanation:"}],
                                       max_tokens=40))
        s = evaluate(hyp, 0, "propose")
        s.decision = "best so far" if best is None or s.score > best.score else "rejected"
        best = s if s.decision == "best so far" else best
        if log:
            log(s)
    stopped, stale = "rounds", 0
    for rnd in range(1, max_rounds + 1):
        if best is None or not b.left(per_hyp):
            stopped = "budget"
            break
        fired = [t for t, a in best.probes if a > 0]
        missed = [t for t, a in best.probes if a <= 0]
        fb = (f"Current description: {best.hypothesis}\nSentences where the feature fired: {fired or 'none'}\n"
              f"Sentences where it did not fire: {missed or 'none'}\nHighlighted excerpts:\n{_show(split.train, 8)}\n\n"
              "Give a better, more precise description. Explanation:")
        hyp = clean_explanation(b.chat([{"role": "system", "content": SYSTEM_EXPLAIN},
                                        {"role": "user", "content": fb}], max_tokens=40))
        s = evaluate(hyp, rnd, "refine")
        if s.score > best.score:
            s.decision, best, stale = "best so far", s, 0
        else:
            s.decision, stale = "rejected", stale + 1
        if log:
            log(s)
        if stale >= patience:
            stopped = "no improvement"
            break
    if best is None:
        return LoopResult("unknown", 0.0, steps, b.calls, "budget")
    return LoopResult(best.hypothesis, best.score, steps, b.calls, stopped)


class _Counted:
    """An LLM view that charges every call to the loop's budget."""

    def __init__(self, b: _Budget) -> None:
        self.b, self.name = b, b.llm.name

    def chat(self, messages: list[dict[str, str]], **kw: Any) -> str:
        return self.b.chat(messages, **kw)

    def choice_probs(self, messages: list[dict[str, str]], choices: Sequence[str]) -> dict[str, float] | None:
        p = self.b.llm.choice_probs(messages, choices)
        self.b.calls += p is not None  # a backend without probabilities answers at once; chat() then counts
        return p
