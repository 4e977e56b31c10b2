"""Document text: normalising prose and code, the cheap English filter, splitting and packing blocks."""

from __future__ import annotations

import re
import textwrap
import unicodedata
from typing import Iterable

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
