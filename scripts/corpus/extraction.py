"""What a source is (``Source``), what extracting it yields (``Extracted``), and the per-source
extraction cache (``extracted/NAME.vN.json`` in the download cache)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import log

EXTRACTOR_VERSION = 1  # bump when any extractor's output changes: invalidates cached extractions


@dataclass
class Extracted:
    docs: list[str]
    packages: list[dict]           # name, version, origin, file
    licence_texts: dict[str, str]  # file name under licenses/ -> full text
    licence_excerpt: str
    extra: dict = field(default_factory=dict)


@dataclass
class Source:
    name: str
    description: str
    licence: str         # short form, for the table
    weight: float        # share of the budget relative to the others (before caps)
    extract: Callable[[Path], Extracted]


def extraction_cache_file(cache: Path, name: str) -> Path:
    return cache / "extracted" / f"{name}.v{EXTRACTOR_VERSION}.json"


def load_or_extract(src: Source, cache: Path, refresh: bool) -> Extracted:
    cf = extraction_cache_file(cache, src.name)
    if cf.exists() and not refresh:
        d = json.loads(cf.read_text(encoding="utf-8"))
        log(f"[{src.name}] cached extraction: {len(d['docs'])} documents")
        return Extracted(**d)
    t0 = time.time()
    log(f"[{src.name}] fetching and extracting ...")
    ex = src.extract(cache)
    cf.parent.mkdir(parents=True, exist_ok=True)
    tmp = cf.with_suffix(".tmp")
    tmp.write_text(json.dumps(ex.__dict__, ensure_ascii=False), encoding="utf-8")
    tmp.replace(cf)
    log(f"[{src.name}] {len(ex.docs)} documents, {sum(map(len, ex.docs)) / 1e6:.1f} M chars in {time.time() - t0:.0f}s")
    return ex
