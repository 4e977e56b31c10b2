"""Explain and score many features: the pipeline behind ``saesteer explain``.

For each feature: delphi's example split (:mod:`saesteer.explain.examples`), then for each asked method
an explanation — ``label`` (the SAE's automatic label, as an explanation), ``oneshot``, ``sage`` (the
loop) and ``random`` (the one-shot explanation of another feature: the baseline that shows the scorer
discriminates) — each scored by detection and fuzzing on the same test examples.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Sequence

from saesteer.errors import SaesteerError
from saesteer.explain.examples import Split, delphi_split, feature_windows, max_activations
from saesteer.explain.explainers import one_shot, sage_loop
from saesteer.explain.llm import LLM
from saesteer.explain.scorers import detection, fuzzing

METHODS = ("label", "oneshot", "sage", "random")


def explain_features(steered: Any, llm: LLM, texts: Sequence[str], features: Sequence[int], *,
                     methods: Sequence[str] = ("label", "oneshot", "sage", "random"), min_examples: int = 20,
                     max_windows: int = 2000, n_shown: int = 1, sage_calls: int = 80, n_test: int = 50,
                     hook: str | None = None, limit: int | None = None,
                     progress: bool = True, log: Callable[[str], None] | None = None) -> dict[int, dict[str, Any]]:
    """``feature -> method -> {"explanation", "detection", "fuzzing", "log"?}`` for every feature with at
    least ``min_examples`` activating windows in ``texts`` (the others get ``{"skipped": reason}``).
    ``n_test``: activating and non-activating test examples each (delphi: 50). ``limit``: explain only the
    first ``limit`` features (by index) that have enough examples; the others are left out of the result.

    Cost: one read of ``texts`` through the model (:func:`feature_windows`), then per feature and method
    one explanation (1 LLM call; the loop up to ``sage_calls`` plus its probe forwards) and 2 x 2 ``n_test``
    scorer calls (delphi's 50 + 50 examples, one shown at a time)."""
    from tqdm.auto import tqdm

    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SaesteerError(f"unknown explanation method(s) {bad}; choose from {', '.join(METHODS)}")
    windows = feature_windows(steered, texts, features, max_windows=max_windows, hook=hook, progress=progress)
    sae = steered.attachment(hook).sae
    labels = sae.labels
    splits: dict[int, Split] = {}
    out: dict[int, dict[str, Any]] = {}
    for f, (on, off) in windows.items():
        if len(on) < min_examples or len(off) < n_test + 10:
            out[f] = {"skipped": f"{len(on)} activating / {len(off)} non-activating windows "
                                 f"(need {min_examples} / {n_test + 10})"}
        else:
            splits[f] = delphi_split(on, off, n_test=n_test, n_negative=n_test)
    if limit is not None:
        splits = {f: splits[f] for f in sorted(splits)[:limit]}
        out = {f: r for f, r in out.items() if f < max(splits, default=-1)}
    oneshots: dict[int, str] = {}
    bar = tqdm(total=len(splits) * len(methods), desc="explain", unit="expl", disable=not progress)
    order = sorted(splits)
    for i, f in enumerate(order):
        sp = splits[f]
        rec: dict[str, Any] = {"n_activating": sp.n_activating}
        for m in methods:
            entry: dict[str, Any] = {}
            if m == "label":
                text = labels[f] if labels is not None and f in labels else None
                if not text:
                    bar.update()
                    continue
                text = str(text)
            elif m == "oneshot":
                text = oneshots.setdefault(f, one_shot(llm, sp))
            elif m == "sage":
                res = sage_loop(llm, sp, lambda ts, f=f: max_activations(steered, f, ts, hook=hook), max_calls=sage_calls)
                text, entry["log"] = res.explanation, res.to_json()
            else:  # random: another feature's one-shot explanation (the next feature in index order)
                if len(order) < 2:
                    bar.update()
                    continue
                other = order[(i + 1) % len(order)]
                text = oneshots.setdefault(other, one_shot(llm, splits[other]))
                entry["from_feature"] = other
            entry["explanation"] = text
            entry["detection"] = detection(llm, text, sp, n_shown=n_shown).scores
            entry["fuzzing"] = fuzzing(llm, text, sp, n_shown=n_shown).scores
            rec[m] = entry
            if log:
                log(f"feature {f} {m}: {text!r} detection {entry['detection']['balanced_accuracy']:.2f} "
                    f"fuzzing {entry['fuzzing']['balanced_accuracy']:.2f}")
            bar.update()
        out[f] = rec
    bar.close()
    return out


def summary(results: dict[int, dict[str, Any]], methods: Sequence[str] = METHODS) -> list[dict[str, Any]]:
    """Per method: features scored, and mean / standard deviation of detection and fuzzing balanced
    accuracy (and AUC where present) over them."""
    rows = []
    for m in methods:
        recs = [r[m] for r in results.values() if isinstance(r.get(m), dict)]
        row: dict[str, Any] = {"method": m, "features": len(recs)}
        for s in ("detection", "fuzzing"):
            for k in ("balanced_accuracy", "auc"):
                vals = [float(r[s][k]) for r in recs if isinstance(r[s].get(k), (int, float)) and r[s][k] == r[s][k]]
                if vals:
                    row[f"{s}_{k}_mean"] = statistics.fmean(vals)
                    row[f"{s}_{k}_sd"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows
