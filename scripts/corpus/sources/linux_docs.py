"""The Linux kernel's Documentation/ tree from Debian's ``linux-doc-X.Y`` (GPL-2.0; per-file SPDX
identifiers counted into the manifest): reStructuredText and plain text to prose documents."""

from __future__ import annotations

import gzip
import re
import textwrap
from pathlib import Path

from ..documents import chunk_blocks, looks_english, normalise_prose, one_line
from ..extraction import Extracted, Source
from ..fetch import decode
from .packages import deb_source

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


_LINUX_SKIP = re.compile(r"/Documentation/(translations|devicetree|ABI|sphinx|output)/")


def extract_linux_docs(cache: Path) -> Extracted:
    want = lambda f: (re.match(r"usr/share/doc/linux-doc-[\d.]+/Documentation/", f) is not None
                      and re.search(r"\.(rst|txt)(\.gz)?$", f) is not None and not _LINUX_SKIP.search(f))
    recs, lic, exc, files = deb_source(cache, [(["linux-doc-6.1"], "linux-doc")], want, r"^Files: \*", 4)
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


SOURCE = Source("linux-docs", "Linux kernel Documentation/ (.rst/.txt -> prose; no translations, DT bindings or ABI)",
                "GPL-2.0 (per-file SPDX in manifest)", 1.0, extract_linux_docs)
