"""WordNet 3.0 from Debian's ``wordnet-base``: synsets (lemmas, gloss, example sentences) grouped by
lexicographer file (WordNet 3.0 licence, permissive)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..extraction import Extracted, Source
from ..fetch import decode
from .packages import deb_source

WN_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


@dataclass
class Synset:
    offset: str
    lexfile: int
    pos: str
    words: list[str]
    definition: str
    examples: list[str]

    def render(self) -> str:
        head = ", ".join(self.words)
        text = f"{head} ({WN_POS.get(self.pos, self.pos)}): {self.definition}"
        if not text.endswith((".", "!", "?")):
            text += "."
        if self.examples:
            text += " " + ("Example: " if len(self.examples) == 1 else "Examples: ") + "; ".join(self.examples) + "."
        return text


def parse_wordnet_line(line: str) -> Synset | None:
    """One line of a WordNet ``data.POS`` file -> Synset (None for the licence header lines)."""
    if not line or line[0] == " " or " | " not in line:
        return None
    fields_part, gloss = line.split(" | ", 1)
    f = fields_part.split()
    offset, lexfile, pos, w_cnt = f[0], int(f[1]), f[2], int(f[3], 16)
    words = []
    for k in range(w_cnt):
        w = f[4 + 2 * k]
        w = re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ")
        if w not in words:
            words.append(w)
    gloss = gloss.strip()
    examples = re.findall(r'"[^"]+"', gloss)
    definition = re.sub(r'"[^"]+"', "", gloss)
    definition = re.sub(r"\s*;\s*(;\s*)*", "; ", definition).strip(" ;")
    examples = [e.strip() for e in examples]
    return Synset(offset, lexfile, pos, words, definition, examples)


def wordnet_docs(lines: Iterable[str], *, group: int = 8, max_chars: int = 1200) -> list[str]:
    """Consecutive synsets of one lexicographer file (so, related senses) grouped into documents."""
    docs: list[str] = []
    cur: list[str] = []
    cur_lex = None
    size = 0
    for line in lines:
        s = parse_wordnet_line(line)
        if s is None or not s.definition:
            continue
        r = s.render()
        if cur and (s.lexfile != cur_lex or len(cur) >= group or size + len(r) > max_chars):
            docs.append("\n".join(cur))
            cur, size = [], 0
        cur.append(r)
        size += len(r) + 1
        cur_lex = s.lexfile
    if cur:
        docs.append("\n".join(cur))
    return docs


def extract_wordnet(cache: Path) -> Extracted:
    want = lambda f: re.fullmatch(r"usr/share/wordnet/data\.(noun|verb|adj|adv)", f) is not None
    recs, lic, exc, files = deb_source(cache, [(["wordnet-base"], None)], want, r"^Files: \*", 40)
    docs = []
    for fn, data in sorted(files, key=lambda t: t[0]):
        docs.extend(wordnet_docs(decode(data).splitlines()))
    return Extracted(docs, recs, lic, exc[0] if exc else "")


SOURCE = Source("wordnet", "WordNet 3.0 synsets: lemmas, glosses, example sentences", "WordNet 3.0 licence (permissive)",
                0.6, extract_wordnet)
