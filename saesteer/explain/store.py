"""Explanations beside the SAE: ``feature_explanations.json`` in the SAE's folder.

``{"meta": {"llm", "scorer", "texts", ...}, "features": {"<f>": {"<method>": {"explanation", "detection",
"fuzzing", "log"?}}}}``, methods ``label`` (the automatic label, scored as an explanation), ``oneshot``,
``sage`` and ``random`` (a baseline: another feature's one-shot explanation). Plain JSON: reading it
runs nothing and allocates only what is in it. The best-scoring explanation of each feature (mean of
detection and fuzzing balanced accuracy, the automatic label excluded) becomes the feature's
``explanation`` when the SAE loads, so ``labels[f]``, ``labels.search`` and ``saesteer features --show``
read it, with its scores.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from saesteer.errors import SaesteerError

FILE = "feature_explanations.json"
METHODS = ("label", "oneshot", "sage", "random")
#: methods whose explanation may become the feature's explanation (the label already is its label;
#: the random baseline is another feature's text)
CANDIDATE_METHODS = ("oneshot", "sage")


def _mean_score(rec: dict[str, Any]) -> float:
    vals = [rec.get(s, {}).get("balanced_accuracy") for s in ("detection", "fuzzing")]
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("-inf")


def best_explanation(methods: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(method, explanation, record) of the best-scoring candidate method, None when there is none."""
    cands = [(m, methods[m]) for m in CANDIDATE_METHODS if isinstance(methods.get(m), dict)
             and isinstance(methods[m].get("explanation"), str)]
    if not cands:
        return None
    m, rec = max(cands, key=lambda mr: _mean_score(mr[1]))
    return m, rec["explanation"], rec


def save(folder: str | os.PathLike, features: dict[int, dict[str, Any]], meta: dict[str, Any]) -> Path:
    """Merge ``features`` (feature -> method -> record) into the folder's file (newer records win) and
    write it. Returns the path."""
    path = Path(folder) / FILE
    old = load(folder) if path.is_file() else {"meta": {}, "features": {}}
    merged = {int(k): dict(v) for k, v in old["features"].items()}
    for f, methods in features.items():
        merged.setdefault(int(f), {}).update(methods)
    data = {"meta": {**old["meta"], **meta}, "features": {str(f): merged[f] for f in sorted(merged)}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_plain), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's explanations file, checked: SaesteerError naming what is wrong."""
    path = Path(folder) / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SaesteerError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
        raise SaesteerError(f"{path}: expected an object with 'features'")
    for k, v in data["features"].items():
        if not k.lstrip("-").isdigit() or not isinstance(v, dict):
            raise SaesteerError(f"{path}: feature key {k!r} is not an integer or its value not an object")
    data.setdefault("meta", {})
    return data


def find(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's explanations, or None when it has none."""
    return load(folder) if (Path(folder) / FILE).is_file() else None


def apply(labels: Any, folder: str | os.PathLike) -> Any:
    """``labels`` (a FeatureLabels, or None) with each explained feature's best explanation and its
    scores merged in; unchanged when the folder has no explanations file."""
    data = find(folder)
    if data is None:
        return labels
    from saesteer.labels import FeatureLabels

    texts, scores = {}, {}
    for k, methods in data["features"].items():
        best = best_explanation(methods)
        if best is None:
            continue
        m, text, rec = best
        texts[int(k)] = text
        scores[int(k)] = {"method": m, "detection": rec.get("detection", {}).get("balanced_accuracy"),
                          "fuzzing": rec.get("fuzzing", {}).get("balanced_accuracy")}
    base = labels if labels is not None else FeatureLabels([], {})
    source = f"saesteer explain ({data['meta'].get('llm', 'unknown LLM')})"
    return base.with_explanations(texts, source, scores=scores)


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON: {type(v).__name__}")
