"""Read the offline text corpus built by ``scripts/build_corpus.py`` (standard library only).

The corpus is a folder holding ``train.jsonl`` and ``heldout.jsonl``, one ``{"text": ..., "source": ...}``
object a line, plus ``manifest.json`` and ``SOURCES.md`` describing each source and its licence.

>>> from saesteer.data import iter_corpus
>>> for text in iter_corpus(split="train", sources=["shakespeare", "python-docs"]):
...     ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

SPLITS = ("train", "heldout")
ENV_VAR = "SAESTEER_CORPUS"
DEFAULT_DIR = "~/.cache/saesteer/corpus"


class CorpusNotFoundError(FileNotFoundError):
    """The corpus folder (or one of its split files) does not exist: build it first."""


def _missing(where: Path) -> CorpusNotFoundError:
    return CorpusNotFoundError(
        f"no corpus at {where}. Build it (offline sources only, a few minutes) with:\n"
        f"    python scripts/build_corpus.py --out {where if where.suffix != '.jsonl' else where.parent}\n"
        f"or point ${ENV_VAR} at an existing corpus folder."
    )


def corpus_path(path: str | os.PathLike | None = None, *, must_exist: bool = True) -> Path:
    """The corpus folder: ``path`` if given, else ``$SAESTEER_CORPUS``, else ``~/.cache/saesteer/corpus``.

    Raises CorpusNotFoundError (a FileNotFoundError) saying how to build it when it is missing
    and ``must_exist`` is true.
    """
    if path is None:
        path = os.environ.get(ENV_VAR) or DEFAULT_DIR
    p = Path(path).expanduser()
    if must_exist and not p.exists():
        raise _missing(p)
    return p


def split_file(path: str | os.PathLike | None = None, split: str = "train") -> Path:
    """The jsonl file of ``split`` in the corpus at ``path`` (a folder, or a jsonl file itself)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    p = corpus_path(path)
    f = p if p.is_file() else p / f"{split}.jsonl"
    if not f.exists():
        raise _missing(p)
    return f


def iter_records(
    path: str | os.PathLike | None = None, split: str = "train", sources: Iterable[str] | str | None = None
) -> Iterator[dict]:
    """``{"text", "source"}`` records of a split, in file order (already shuffled by the builder)."""
    wanted = None if sources is None else ({sources} if isinstance(sources, str) else set(sources))
    f = split_file(path, split)
    with open(f, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{f}:{lineno}: not a JSON line ({e})") from None
            if wanted is None or rec.get("source") in wanted:
                yield rec


def iter_corpus(
    path: str | os.PathLike | None = None, split: str = "train", sources: Iterable[str] | str | None = None
) -> Iterator[str]:
    """Texts of a corpus split, optionally only from some ``sources`` (names as in manifest.json)."""
    for rec in iter_records(path, split, sources):
        yield rec["text"]


def load_manifest(path: str | os.PathLike | None = None) -> dict:
    """The builder's manifest.json: per-source packages, licences and counts."""
    p = corpus_path(path)
    m = (p.parent if p.is_file() else p) / "manifest.json"
    if not m.exists():
        raise _missing(p)
    return json.loads(m.read_text(encoding="utf-8"))
