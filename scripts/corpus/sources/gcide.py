"""The GNU Collaborative International Dictionary of English from Debian's ``dict-gcide`` (a dictd
database; GPL-2.0-or-later): entries without pronunciations, source tags or ASCII letter codes."""

from __future__ import annotations

import gzip
import re
import unicodedata
from pathlib import Path
from typing import Iterator

from ..documents import chunk_blocks, normalise_prose, one_line
from ..extraction import Extracted, Source
from ..fetch import decode
from .packages import deb_source

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


def extract_gcide(cache: Path) -> Extracted:
    want = lambda f: f in ("usr/share/dictd/gcide.index", "usr/share/dictd/gcide.dict.dz")
    recs, lic, exc, files = deb_source(cache, [(["dict-gcide"], None)], want, r"GCIDE is distributed under", 20)
    got = dict(files)
    index = decode(got["usr/share/dictd/gcide.index"])
    data = gzip.decompress(got["usr/share/dictd/gcide.dict.dz"])  # dictzip is gzip-compatible
    return Extracted(gcide_docs(index, data), recs, lic, exc[0] if exc else "")


SOURCE = Source("gcide", "GNU Collaborative International Dictionary of English entries", "GPL-2.0-or-later",
                0.8, extract_gcide)
