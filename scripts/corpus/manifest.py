"""What the corpus says about itself: ``manifest.json``, ``SOURCES.md`` (with a summary table) and
``licenses/`` (each package's full copyright or licence text)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .extraction import EXTRACTOR_VERSION, Extracted, Source


def write_licences(out: Path, extracted: dict[str, Extracted]) -> None:
    """``licenses/``: every licence text of the built sources, and nothing else."""
    lic_dir = out / "licenses"
    if lic_dir.is_dir():  # this folder is the builder's own: no stale licence of a source left out this time
        shutil.rmtree(lic_dir)
    lic_dir.mkdir()
    for ex in extracted.values():
        for fn, text in ex.licence_texts.items():
            (lic_dir / fn).write_text(text, encoding="utf-8")


def make_manifest(extracted: dict[str, Extracted], stats: dict[str, dict], failed: dict[str, str],
                  sources: dict[str, Source], *, seed: int, max_mb: float, max_share: float,
                  heldout_fraction: float, train_documents: int, heldout_documents: int,
                  build_seconds: float) -> dict:
    total_chars = sum(s["characters"] for s in stats.values())
    manifest_sources = {}
    for name, ex in extracted.items():
        manifest_sources[name] = {
            "description": sources[name].description,
            "packages": ex.packages,
            "licence": sources[name].licence,
            "licence_excerpt": ex.licence_excerpt,
            "licence_files": sorted(f"licenses/{fn}" for fn in ex.licence_texts),
            **stats[name],
            "share": round(stats[name]["characters"] / total_chars, 4) if total_chars else 0.0,
            "extraction": ex.extra,
        }
    return {
        "format": "jsonl lines {\"text\": str, \"source\": str}",
        "files": {"train": "train.jsonl", "heldout": "heldout.jsonl"},
        "builder": "scripts/build_corpus.py", "extractor_version": EXTRACTOR_VERSION,
        "seed": seed, "max_mb": max_mb, "max_share": max_share, "heldout_fraction": heldout_fraction,
        "heldout_rule": "sha1('heldout:' + text) < fraction * 2**64 (first 8 bytes, big-endian)",
        "totals": {"documents": sum(s["documents"] for s in stats.values()),
                   "train_documents": train_documents, "heldout_documents": heldout_documents,
                   "characters": total_chars, "est_tokens": total_chars // 4},
        "sources": manifest_sources,
        "failed_sources": failed,
        "build_seconds": build_seconds,
    }


def write_manifest(out: Path, manifest: dict) -> None:
    """``manifest.json`` and ``SOURCES.md``."""
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "SOURCES.md").write_text(sources_md(manifest), encoding="utf-8")


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
