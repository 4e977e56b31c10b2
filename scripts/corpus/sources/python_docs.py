"""The Python 3 documentation from Debian's ``python3.X-doc`` (PSF-2.0; its code examples PSF-2.0 or
0BSD): Sphinx HTML pages to prose documents, plus their Python code examples as code documents."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

from ..documents import chunk_blocks, looks_english, normalise_code, normalise_prose, one_line
from ..extraction import Extracted, Source
from ..fetch import decode
from .packages import deb_source

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


_PY_SKIP = re.compile(r"(^|/)(genindex[^/]*|py-modindex|search|contents|changelog)\.html$")


def extract_python_docs(cache: Path) -> Extracted:
    want = lambda f: (re.match(r"usr/share/doc/python3\.\d+/html/", f) is not None and f.endswith(".html")
                      and "/_" not in f and not _PY_SKIP.search(f))
    recs, lic, exc, files = deb_source(cache, [(["python3.11-doc"], "python3-doc")], want,
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


SOURCE = Source("python-docs", "Python 3 documentation (HTML -> text) and its Python code examples",
                "PSF-2.0 (code examples: PSF-2.0 or 0BSD)", 1.0, extract_python_docs)
