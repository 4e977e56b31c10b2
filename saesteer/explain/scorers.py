"""delphi's two explanation scorers, detection and fuzzing, and their scores.

Both ask the LLM, given only the explanation, to classify examples as belonging to the feature (1) or
not (0), at temperature 0, in batches of ``n_shown`` examples (delphi's CLI shows 5, its class default is
1; 1 is the default here: a small model cannot keep a list of 5 straight). The examples are the
feature's test examples (label 1) and its non-activating ones (label 0), shuffled with
``random.Random(42)``.

- **Detection**: the plain text of each example.
- **Fuzzing**: the same examples with tokens highlighted ``<<like this>>``: in an activating example the
  tokens whose activation is >= 0.3 x the feature's largest activation among the examples; in a
  non-activating one ``ceil(mean highlighted count)`` random tokens, always including position
  ``len - len // 4``. The LLM says whether the highlighting marks the explanation.

Scores (:func:`scores`): balanced accuracy ``(TP/P + TN/N) / 2`` at 0.5, precision, recall, F1, and,
when the backend gives probabilities (``choice_probs``: one example shown at a time), the AUC of
``p = P(1) / (P(0) + P(1))``. An answer that cannot be parsed counts as wrong and is counted
(``failed``).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from saesteer.explain.examples import Example, Split
from saesteer.explain.llm import LLM, Messages

FUZZ_THRESHOLD = 0.3
SYSTEM_DETECTION = ("You judge whether texts show a given pattern. You get the pattern's description and "
                    "numbered texts. For each text answer 1 if it shows the pattern and 0 if it does not. Reply "
                    "with a Python list of 0s and 1s, one per text, and nothing else.")
SYSTEM_FUZZING = ("You judge whether highlighted words match a given pattern. You get the pattern's description "
                  "and numbered texts in which some words are highlighted <<like this>>. For each text answer 1 "
                  "if the highlighted words are the ones the pattern describes and 0 if they are not. Reply with "
                  "a Python list of 0s and 1s, one per text, and nothing else.")


@dataclass(frozen=True)
class Judged:
    """One example's label (1: activating), the LLM's prediction (None: unparsable) and probability."""

    label: int
    prediction: int | None
    probability: float | None
    text: str


@dataclass
class ScoreResult:
    """A scorer's verdicts and the scores they give (see :func:`scores`)."""

    scorer: str
    judged: list[Judged] = field(default_factory=list)

    @property
    def scores(self) -> dict[str, float]:
        return scores(self.judged)


def highlight(ex: Example, mask: Sequence[bool]) -> str:
    """The example's text with each run of masked tokens wrapped in ``<<`` ``>>``."""
    out, open_ = [], False
    for t, m in zip(ex.tokens, mask):
        if m and not open_:
            out.append("<<")
            open_ = True
        if not m and open_:
            out.append(">>")
            open_ = False
        out.append(t)
    if open_:
        out.append(">>")
    return "".join(out)


def fuzz_texts(split: Split, seed: int = 42) -> tuple[list[str], list[str]]:
    """(activating, non-activating) texts highlighted as delphi's fuzzing does (module doc)."""
    top = max((e.max_act for e in split.test), default=0.0)
    thr = FUZZ_THRESHOLD * top
    masks = [[a >= thr and a > 0 for a in e.acts] for e in split.test]
    on = [highlight(e, m) for e, m in zip(split.test, masks)]
    n_hi = math.ceil(sum(map(sum, masks)) / len(masks)) if masks else 1
    rng = random.Random(seed)
    off = []
    for e in split.negatives:
        n = len(e.tokens)
        fixed = n - n // 4
        pool = [i for i in range(n) if i != fixed]
        pick = {fixed} | set(rng.sample(pool, min(max(n_hi - 1, 0), len(pool)))) if n else set()
        off.append(highlight(e, [i in pick for i in range(n)]))
    return on, off


def parse_labels(answer: str, n: int) -> list[int] | None:
    """The first list of ``n`` 0/1 values in ``answer`` (``[1, 0]``, or bare ``1 0`` / ``1``); None
    when there is none of that length."""
    m = re.search(r"\[([^\]]*)\]", answer)
    body = m.group(1) if m else answer
    vals = re.findall(r"(?<![\d.])[01](?![\d.])", body)
    return [int(v) for v in vals[:n]] if len(vals) >= n else None


def _messages(system: str, explanation: str, texts: Sequence[str]) -> Messages:
    body = "\n".join(f"Text {i + 1}: {t}" for i, t in enumerate(texts))
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Pattern: {explanation}\n\n{body}\n\nAnswer (a list of {len(texts)}):"}]


def _judge(llm: LLM, system: str, explanation: str, pos: list[str], neg: list[str], n_shown: int,
           seed: int) -> list[Judged]:
    items = [(1, t) for t in pos] + [(0, t) for t in neg]
    random.Random(seed).shuffle(items)
    out: list[Judged] = []
    many = getattr(llm, "choice_probs_many", None)
    if n_shown == 1 and many is not None:  # a local model: every example in batched forwards
        probs = many([_messages(system, explanation, [t]) for _, t in items], ("0", "1"))
        for (label, t), pr in zip(items, probs):
            p = pr["1"] / max(pr["0"] + pr["1"], 1e-30)
            out.append(Judged(label, int(p > 0.5), p, t))
        return out
    for lo in range(0, len(items), n_shown):
        batch = items[lo:lo + n_shown]
        msgs = _messages(system, explanation, [t for _, t in batch])
        probs = llm.choice_probs(msgs, ("0", "1")) if len(batch) == 1 else None
        if probs is not None:
            p = probs["1"] / max(probs["0"] + probs["1"], 1e-30)
            out.append(Judged(batch[0][0], int(p > 0.5), p, batch[0][1]))
            continue
        got = parse_labels(llm.chat(msgs, max_tokens=8 + 4 * len(batch), temperature=0.0), len(batch))
        for j, (label, t) in enumerate(batch):
            out.append(Judged(label, None if got is None else got[j], None, t))
    return out


def detection(llm: LLM, explanation: str, split: Split, *, n_shown: int = 1, seed: int = 42) -> ScoreResult:
    """delphi's detection score of ``explanation`` on ``split`` (module doc). Cost: one LLM call per
    ``n_shown`` examples (100 calls for delphi's 50 + 50 at ``n_shown=1``)."""
    return ScoreResult("detection", _judge(llm, SYSTEM_DETECTION, explanation, [e.text for e in split.test],
                                           [e.text for e in split.negatives], n_shown, seed))


def fuzzing(llm: LLM, explanation: str, split: Split, *, n_shown: int = 1, seed: int = 42) -> ScoreResult:
    """delphi's fuzzing score of ``explanation`` on ``split`` (module doc). Cost: as :func:`detection`."""
    on, off = fuzz_texts(split, seed)
    return ScoreResult("fuzzing", _judge(llm, SYSTEM_FUZZING, explanation, on, off, n_shown, seed))


def auc(labels: Sequence[int], probs: Sequence[float]) -> float:
    """ROC AUC: the probability that a random positive gets a higher ``p`` than a random negative, ties
    counting one half; nan without both classes."""
    pos = [p for y, p in zip(labels, probs) if y == 1]
    neg = [p for y, p in zip(labels, probs) if y == 0]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def scores(judged: Sequence[Judged]) -> dict[str, float]:
    """Balanced accuracy, accuracy, precision, recall, F1 (an unparsable answer counts as wrong) and AUC
    (only when every verdict has a probability), with the counts."""
    P = sum(j.label == 1 for j in judged)
    N = len(judged) - P
    tp = sum(j.label == 1 and j.prediction == 1 for j in judged)
    tn = sum(j.label == 0 and j.prediction == 0 for j in judged)
    fp = sum(j.label == 0 and j.prediction == 1 for j in judged)
    nan = float("nan")
    prec = tp / (tp + fp) if tp + fp else nan
    rec = tp / P if P else nan
    out = {"balanced_accuracy": ((tp / P if P else nan) + (tn / N if N else nan)) / 2,
           "accuracy": (tp + tn) / len(judged) if judged else nan, "precision": prec, "recall": rec,
           "f1": 2 * prec * rec / (prec + rec) if prec == prec and rec == rec and prec + rec else nan,
           "n": len(judged), "failed": sum(j.prediction is None for j in judged)}
    if judged and all(j.probability is not None for j in judged):
        out["auc"] = auc([j.label for j in judged], [float(j.probability) for j in judged])
    return out
