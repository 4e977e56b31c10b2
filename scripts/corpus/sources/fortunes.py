"""fortune(6) cookie files from Debian's ``fortunes`` and ``fortunes-min`` (BSD licence; quotations
by many authors)."""

from __future__ import annotations

import re
from pathlib import Path

from ..documents import looks_english, normalise_prose
from ..extraction import Extracted, Source
from ..fetch import decode
from .packages import deb_source


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


def extract_fortunes(cache: Path) -> Extracted:
    skip = {"ascii-art", "translate-me"}
    want = lambda f: (f.startswith("usr/share/games/fortunes/") and "." not in f.rsplit("/", 1)[-1]
                      and f.rsplit("/", 1)[-1] not in skip)
    recs, lic, exc, files = deb_source(cache, [(["fortunes-min"], None), (["fortunes"], None)], want,
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


SOURCE = Source("fortunes", "fortune(6) cookie files (fortunes, fortunes-min)", "BSD (package); quotations by many authors",
                1.0, extract_fortunes)
