"""Build the corpus: extract each source (cached), de-duplicate, share the character budget, sample,
split off the held-out documents, shuffle, and write the jsonl files, licences and manifest."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

from . import log
from .extraction import Extracted, load_or_extract
from .manifest import make_manifest, write_licences, write_manifest
from .sources import SOURCES
from .split import HELDOUT_FRACTION, allocate, is_heldout, sample_docs, text_hash


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def deduplicate(extracted: dict[str, Extracted]) -> dict[str, list[str]]:
    """Exact de-duplication, within and across sources (first source in SOURCES order wins)."""
    seen: set[int] = set()
    pool: dict[str, list[str]] = {}
    for name in extracted:
        keep = []
        for d in extracted[name].docs:
            h = text_hash(d)
            if h not in seen:
                seen.add(h)
                keep.append(d)
        pool[name] = keep
    return pool


def build(out: Path, sources: list[str], max_mb: float, seed: int, cache: Path, max_share: float = 0.35,
          heldout_fraction: float = HELDOUT_FRACTION, refresh: bool = False) -> dict:
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    extracted: dict[str, Extracted] = {}
    failed: dict[str, str] = {}
    for name in sources:
        try:
            extracted[name] = load_or_extract(SOURCES[name], cache, refresh)
        except Exception as e:  # a source that cannot be fetched is reported, the others still build
            failed[name] = f"{type(e).__name__}: {e}"
            log(f"[{name}] FAILED: {failed[name]}")
    if not extracted:
        raise SystemExit(f"no source could be built: {failed}")

    pool = deduplicate(extracted)
    available = {n: sum(map(len, docs)) for n, docs in pool.items()}
    alloc = allocate(available, {n: SOURCES[n].weight for n in pool}, max_mb * 1e6, max_share)
    rows_train, rows_held = [], []
    stats: dict[str, dict] = {}
    for name, docs in pool.items():
        chosen = sample_docs(docs, alloc[name], seed)
        tr = [d for d in chosen if not is_heldout(d, heldout_fraction)]
        he = [d for d in chosen if is_heldout(d, heldout_fraction)]
        rows_train += [{"text": d, "source": name} for d in tr]
        rows_held += [{"text": d, "source": name} for d in he]
        chars = sum(map(len, chosen))
        stats[name] = {"documents": len(chosen), "train_documents": len(tr), "heldout_documents": len(he),
                       "characters": chars, "est_tokens": chars // 4, "available_documents": len(docs),
                       "available_characters": available[name],
                       "sampled_fraction": round(chars / available[name], 4) if available[name] else 0.0}

    key = lambda r: text_hash(r["text"], f"shuffle:{seed}:")
    rows_train.sort(key=key)
    rows_held.sort(key=key)
    write_jsonl(out / "train.jsonl", rows_train)
    write_jsonl(out / "heldout.jsonl", rows_held)

    write_licences(out, extracted)
    manifest = make_manifest(extracted, stats, failed, SOURCES, seed=seed, max_mb=max_mb, max_share=max_share,
                             heldout_fraction=heldout_fraction, train_documents=len(rows_train),
                             heldout_documents=len(rows_held), build_seconds=round(time.time() - t0, 1))
    write_manifest(out, manifest)
    return manifest
