"""Reading a source's packages: each package's version record, its copyright or licence files (full
text, plus an excerpt for SOURCES.md) and the files the source wants."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterator

from ..fetch import deb_version, decode, fetch_deb, fetch_pypi, iter_archive_files, iter_deb_files


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


def deb_source(cache: Path, pkgs: list[tuple[list[str], str | None]], want: Callable[[str], bool],
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


def pypi_source(cache: Path, name: str, version: str, want: Callable[[str], bool]):
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
