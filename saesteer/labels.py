"""Feature labels: what each SAE feature responds to and what it writes, stored beside the SAE.

``feature_labels.json.gz`` (plain gzipped JSON, never pickle) holds, per feature: a short ``label``,
its most frequent top-activating tokens, its top logit-effect tokens (decoder row through the
unembedding), the corpus sources of its top contexts, a few top-activating contexts, and how often
it fires. ``load_sae`` attaches the labels it finds as ``sae.labels``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

FILE = "feature_labels.json.gz"


@dataclass(frozen=True)
class Match:
    """One search hit: the feature, how well it matched, and its label."""

    feature: int
    score: float
    label: str


class FeatureLabels(Mapping[int, str]):
    """Read-only mapping ``feature -> label`` with the full record per feature and a search.

    ``labels[i]`` is the short label; ``labels.info(i)`` the whole record;
    ``labels.search("thou")`` ranks features whose sources, top tokens, logit tokens or contexts
    mention the word. Cost: the file is read on first use (a few MB for thousands of features).
    """

    def __init__(self, records: list[dict[str, Any]], meta: dict[str, Any] | None = None) -> None:
        self._records: dict[int, dict[str, Any]] | None = {int(r["feature"]): r for r in records}
        self._meta = dict(meta or {})
        self._path: Path | None = None

    @classmethod
    def lazy(cls, path: str | os.PathLike) -> "FeatureLabels":
        """Labels read from ``path`` on first use: the records of thousands of features take ~15 MB
        as Python objects, which a model that steers and never asks for a label need not hold."""
        labels = cls([])
        labels._records, labels._path = None, Path(path)
        return labels

    def _load(self) -> None:
        with gzip.open(self._path, "rt", encoding="utf-8") as fh:  # type: ignore[arg-type]
            data = json.load(fh)
        self._records = {int(r["feature"]): r for r in data["features"]}
        self._meta = dict(data.get("meta") or {})

    @property
    def _by_id(self) -> dict[int, dict[str, Any]]:
        if self._records is None:
            self._load()
        return self._records  # type: ignore[return-value]

    @property
    def meta(self) -> dict[str, Any]:
        """The file's metadata (how the labels were made)."""
        self._by_id  # noqa: B018 - read on first use, like the records
        return self._meta

    # Mapping protocol ------------------------------------------------------------------------
    def __getitem__(self, feature: int) -> str:
        """The feature's explanation when one was imported (Neuronpedia, delphi), else its automatic label."""
        r = self._by_id[int(feature)]
        return str(r.get("explanation") or r.get("label", ""))

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._by_id))

    def __len__(self) -> int:
        return len(self._by_id)

    def describe(self, feature: int) -> str:
        """One line for a person: the feature's explanation with its scores when ``saesteer explain`` or
        an import gave it some (``"... [detection 0.71, fuzzing 0.64]"``), else its automatic label."""
        r = self._by_id[int(feature)]
        text = str(r.get("explanation") or r.get("label", ""))
        sc = r.get("explanation_scores") or {} if r.get("explanation") else {}
        parts = [f"{k} {v:.2f}" for k, v in sc.items() if k in ("detection", "fuzzing") and isinstance(v, (int, float))]
        return f"{text} [{', '.join(parts)}]" if parts else text

    def info(self, feature: int) -> dict[str, Any]:
        """The whole record of one feature (label, top tokens, logit tokens, sources, contexts)."""
        return dict(self._by_id[int(feature)])

    # search ----------------------------------------------------------------------------------
    def search(self, query: str, top: int = 10) -> list[Match]:
        """Features matching every word of ``query`` (case-insensitive), best first.

        A word scores 4 x share when it names the source of at least half of the feature's top
        contexts, 3 per top-activating token it equals, 2 per logit token it equals, 2 when it is a
        word of an imported explanation, 1 when it appears in the label, and 0.5 per context holding
        it. Features missing any word are dropped.
        """
        words = [w for w in re.split(r"\s+", query.lower().strip()) if w]
        if not words:
            return []
        hits = []
        for f, r in self._by_id.items():
            total = 0.0
            for w in words:
                s = _score(r, w)
                if s == 0:
                    break
                total += s
            else:
                hits.append(Match(f, total * (0.5 + min(float(r.get("density", 0.0)) * 200, 0.5)), self[f]))
        hits.sort(key=lambda m: (-m.score, m.feature))
        return hits[:top]

    def with_explanations(self, explanations: Mapping[int, str], source: str,
                          scores: Mapping[int, Mapping[str, Any]] | None = None) -> "FeatureLabels":
        """A copy whose features carry ``explanations`` (feature -> text) from ``source`` (e.g.
        ``"neuronpedia gpt-4o-mini"``): ``labels[i]`` then reads the explanation, the automatic label
        stays in the record as ``label``, and search also matches the explanation's words. Features
        with no record yet get one holding only the explanation. ``scores`` (feature -> e.g.
        ``{"detection": 0.8, "fuzzing": 0.7}``) are kept as ``explanation_scores``."""
        records = {f: dict(r) for f, r in self._by_id.items()}
        for f, text in explanations.items():
            r = records.setdefault(int(f), {"feature": int(f)})
            r["explanation"], r["explanation_source"] = str(text), source
            if scores and int(f) in scores:
                r["explanation_scores"] = dict(scores[int(f)])
        meta = dict(self.meta)
        meta.setdefault("explanation_sources", [])
        if source not in meta["explanation_sources"]:
            meta["explanation_sources"] = [*meta["explanation_sources"], source]
        return FeatureLabels(list(records.values()), meta)

    # files -----------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        path = Path(folder) / FILE
        data = {"meta": self.meta, "features": [self._by_id[f] for f in sorted(self._by_id)]}
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
        return path

    @classmethod
    def load(cls, folder_or_file: str | os.PathLike) -> "FeatureLabels":
        p = Path(folder_or_file)
        path = p / FILE if p.is_dir() else p
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        return cls(list(data["features"]), data.get("meta"))

    @classmethod
    def find(cls, folder: str | os.PathLike) -> "FeatureLabels | None":
        """The labels stored in ``folder``, or None when it has none."""
        p = Path(folder)
        return cls.lazy(p / FILE) if p.is_dir() and (p / FILE).is_file() else None


def _norm(t: str) -> str:
    return t.replace("Ġ", " ").replace("Ċ", "\n").strip().lower()


def _score(r: dict[str, Any], w: str) -> float:
    s = 0.0
    sources = r.get("sources") or {}
    if sources:
        top_src, share = max(sources.items(), key=lambda kv: kv[1])
        if w in top_src.lower() and share >= 0.5:
            s += 4 * share
    s += 3 * sum(_norm(t) == w for t in r.get("top_tokens", []))
    s += 2 * sum(_norm(t) == w for t in r.get("logit_tokens", []))
    s += 1 if w in str(r.get("label", "")).lower() else 0
    s += 2 if w in re.findall(r"[\w']+", str(r.get("explanation", "")).lower()) else 0
    s += 0.5 * sum(w in str(c.get("text", "")).lower() for c in r.get("contexts", []))
    return s
