"""The corpus sources, one module each, in build order (the first source wins a duplicate document)."""

from __future__ import annotations

from ..extraction import Source
from . import fortunes, gcide, kjv, linux_docs, python_docs, shakespeare, wordnet

SOURCES: dict[str, Source] = {s.SOURCE.name: s.SOURCE for s in [
    shakespeare, kjv, python_docs, linux_docs, fortunes, wordnet, gcide,
]}
