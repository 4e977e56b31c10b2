"""The offline corpus recipe: extractors on hand-written samples of each format, the stable held-out split,
the budget allocation, and saesteer.data reading what the builder writes. No network, no apt, no pip."""

from __future__ import annotations

import gzip
import io
import json
import random
import sys
import tarfile
from pathlib import Path

import pytest

from saesteer.data import CorpusNotFoundError, corpus_path, iter_corpus, iter_records, load_manifest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # the builder's `corpus` package

import corpus.build as corpus_build  # noqa: E402
from corpus import fetch  # noqa: E402
from corpus.build import build  # noqa: E402
from corpus.documents import chunk_blocks, looks_english, split_long  # noqa: E402
from corpus.extraction import Extracted, Source  # noqa: E402
from corpus.fetch import deb_version, iter_deb_files  # noqa: E402
from corpus.sources.fortunes import parse_fortunes  # noqa: E402
from corpus.sources.gcide import _B64, clean_gcide_entry, dictd_b64, dictd_entries, gcide_docs  # noqa: E402
from corpus.sources.kjv import kjv_docs  # noqa: E402
from corpus.sources.linux_docs import linux_doc_docs, rst_to_blocks  # noqa: E402
from corpus.sources.python_docs import html_to_blocks, python_html_docs  # noqa: E402
from corpus.sources.shakespeare import shakespeare_docs  # noqa: E402
from corpus.sources.wordnet import parse_wordnet_line, wordnet_docs  # noqa: E402
from corpus.split import allocate, is_heldout, sample_docs  # noqa: E402


# ---- fortunes ---------------------------------------------------------------------------------------

FORTUNE_FILE = """\
A day for firm decisions!!!!!  Or is it?
%
Beware of low-flying butterflies.
%
%
	"It is a miracle that curiosity survives formal education."
		-- Albert Einstein
%
x
%
 ___====-_  _-====___
 |||||||| ||||||||||||
%
"""


def test_fortunes_split_on_percent_lines_and_normalise():
    got = parse_fortunes(FORTUNE_FILE)
    assert got == [
        "A day for firm decisions!!!!! Or is it?",
        "Beware of low-flying butterflies.",
        '"It is a miracle that curiosity survives formal education."\n-- Albert Einstein',
    ]  # empty, tiny and ASCII-art entries dropped; line breaks kept, runs of spaces and tabs collapsed


# ---- WordNet ----------------------------------------------------------------------------------------

WN_LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by  ",
    '00016380 29 v 01 drowse 0 004 @ 00014405 v 0000 + 00858849 n 0102 ^ 00017282 v 0108 ~ 00016573 v 0000 '
    '01 + 02 00 | be on the verge of sleeping; "The students were drowsing in the 8 AM class"  ',
    "00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 + 00692347 v 0101 | a general "
    "concept formed by extracting common features from specific examples  ",
    '00355453 00 s 02 idempotent(a) 0 self-same 0 002 & 00355258 a 0000 ;c 06000644 n 0000 | unchanged in value '
    'following multiplication by itself; "this matrix is idempotent"; "an idempotent map"  ',
]


def test_wordnet_line_parsing():
    assert parse_wordnet_line(WN_LINES[0]) is None  # licence header
    s = parse_wordnet_line(WN_LINES[1])
    assert (s.offset, s.lexfile, s.pos, s.words) == ("00016380", 29, "v", ["drowse"])
    assert s.definition == "be on the verge of sleeping"
    assert s.examples == ['"The students were drowsing in the 8 AM class"']
    assert s.render() == 'drowse (verb): be on the verge of sleeping. Example: "The students were drowsing in the 8 AM class".'
    a = parse_wordnet_line(WN_LINES[2])
    assert a.words == ["abstraction", "abstract entity"] and a.examples == []
    adj = parse_wordnet_line(WN_LINES[3])
    assert adj.words == ["idempotent", "self-same"]  # "(a)" adjective marker removed
    assert adj.render().startswith("idempotent, self-same (adjective): unchanged in value following multiplication")
    assert adj.render().endswith('Examples: "this matrix is idempotent"; "an idempotent map".')


def test_wordnet_docs_group_by_lexicographer_file():
    docs = wordnet_docs(WN_LINES)
    assert len(docs) == 3  # lexfiles 29, 3, 0: never mixed in one document
    assert docs[0].startswith("drowse (verb)")
    docs = wordnet_docs([WN_LINES[1]] * 5, group=2)
    assert [d.count("\n") + 1 for d in docs] == [2, 2, 1]


# ---- dictd (GCIDE) ----------------------------------------------------------------------------------


def _b64(n: int) -> str:
    digits = ""
    while True:
        digits = _B64[n % 64] + digits
        n //= 64
        if not n:
            return digits


def _dictd(entries: list[tuple[str, str]]) -> tuple[str, bytes]:
    data, index = b"", []
    for word, text in entries:
        raw = text.encode("utf-8")
        index.append(f"{word}\t{_b64(len(data))}\t{_b64(len(raw))}")
        data += raw
    return "\n".join(index) + "\n", data


CABAL = (
    'Cabal \\Ca*bal"\\ (k[.a]*b[a^]l"), n. [F. cabale cabal, fr. Heb. q[=a]bal to\n'
    "   take.]\n"
    "   1. Tradition; occult doctrine. See {Cabala}. [Obs.]\n"
    "      --Hakewill.\n"
    "      [1913 Webster]\n"
    "\n"
    "   2. A secret. [Obs.] --B. Jonson.\n"
    "      [1913 Webster]\n"
)


def test_dictd_index_numbers():
    assert dictd_b64("A") == 0 and dictd_b64("B") == 1 and dictd_b64("BA") == 64
    assert dictd_b64(_b64(3641181)) == 3641181


def test_dictd_entries_and_gcide_cleaning():
    index, data = _dictd([("00-database-short", "The Collaborative International Dictionary"),
                          ("Cabal", CABAL), ("cabal", "")])
    index += "Cabals\t" + index.splitlines()[1].split("\t", 1)[1] + "\n"  # a second headword, same entry
    entries = list(dictd_entries(index, data))
    assert [w for w, _ in entries] == ["Cabal"]  # database info skipped, duplicate offsets read once
    text = clean_gcide_entry(entries[0][1])
    assert text == (
        "Cabal, n. [F. cabale cabal, fr. Heb. qābal to take.] 1. Tradition; occult doctrine. See Cabala. [Obs.] "
        "--Hakewill.\n\n2. A secret. [Obs.] --B. Jonson."
    )
    docs = gcide_docs(index, gzip.decompress(gzip.compress(data)))
    assert docs == [text]


# ---- HTML (Sphinx Python docs) ----------------------------------------------------------------------

PY_PAGE = """<!DOCTYPE html><html><head><title>json — JSON encoder and decoder &#8212; Python 3.11 documentation</title>
<script>var x = "<p>not text</p>";</script></head><body>
<div class="related" role="navigation"><ul><li>previous | next</li></ul></div>
<div class="document"><div class="body" role="main">
<section id="module-json"><h1><code>json</code> — JSON encoder and decoder<a class="headerlink" href="#x">¶</a></h1>
<p><strong>Source code:</strong> <a href="x">Lib/json/__init__.py</a></p>
<p>JSON is a lightweight data interchange format inspired by
   JavaScript object literal syntax, and it is used by many programs.</p>
<div class="highlight-python3 notranslate"><div class="highlight"><pre><span></span><span class="gp">&gt;&gt;&gt; </span><span class="kn">import</span> json
<span class="gp">&gt;&gt;&gt; </span>json.dumps([<span class="s1">'foo'</span>, {<span class="s1">'bar'</span>: (<span class="s1">'baz'</span>, None, 1.0, 2)}])
'["foo", {"bar": ["baz", null, 1.0, 2]}]'
</pre></div></div>
<div class="highlight-shell-session notranslate"><div class="highlight"><pre>$ echo '{"json":"obj"}' | python -m json.tool
</pre></div></div>
<dl class="py function"><dt class="sig"><span class="sig-prename">json.</span><span class="sig-name">dump</span>(<em>obj</em>, <em>fp</em>)<a class="headerlink" href="#y">¶</a></dt>
<dd><p>Serialize <em>obj</em> as a JSON formatted stream to <em>fp</em> (a file-like object that supports writing).</p></dd></dl>
<table><tr><th><p>JSON</p></th><th><p>Python</p></th></tr><tr><td><p>object</p></td><td><p>dict</p></td></tr></table>
</section></div></div>
<div class="sphinxsidebar"><p>This sidebar text is not part of the page and should never be in the corpus.</p></div>
<div class="footer">© Copyright 2001-2023, Python Software Foundation.</div>
</body></html>"""


def test_html_blocks_strip_tags_and_keep_code():
    title, blocks = html_to_blocks(PY_PAGE)
    assert title == "json"
    kinds = [k for k, _ in blocks]
    assert blocks[0] == ("h", "json — JSON encoder and decoder")  # headerlink ¶ gone
    assert ("p", "JSON is a lightweight data interchange format inspired by JavaScript object literal syntax, "
                 "and it is used by many programs.") in blocks
    assert ("dt", "json.dump(obj, fp)") in blocks
    assert ("p", "JSON | Python") in blocks and ("p", "object | dict") in blocks  # table rows, cells joined
    code = [t for k, t in blocks if k == "code:python3"]
    assert code and code[0].startswith(">>> import json\n>>> json.dumps(")
    assert "code:shell-session" in kinds
    everything = " ".join(t for _, t in blocks)
    assert "sidebar" not in everything and "not text" not in everything and "previous" not in everything
    assert "Copyright" not in everything


def test_python_html_docs_prose_and_code_documents():
    docs = python_html_docs(PY_PAGE)
    kinds = [k for k, _ in docs]
    assert kinds.count("code") == 1 and kinds.count("prose") == 1
    code = next(t for k, t in docs if k == "code")
    assert code.splitlines()[0] == ">>> import json" and "python -m json.tool" not in code  # shell dropped
    prose = next(t for k, t in docs if k == "prose")
    assert prose.startswith("json — JSON encoder and decoder\n\n")
    assert "json.dump(obj, fp)\nSerialize obj as a JSON formatted stream" in prose  # signature + its text


# ---- reStructuredText (kernel docs) -----------------------------------------------------------------

RST = """\
.. SPDX-License-Identifier: GPL-2.0

======================
Memory Barrier Helpers
======================

:Author: Somebody <somebody@example.org>

This document describes the *memory* barrier helpers and explains when the
kernel uses them, with :c:func:`smp_mb` and ``READ_ONCE()`` as examples.
See :ref:`the locking guide <locking>` for the rest of the story.

Usage
-----

Call the helper before the store, for example::

    smp_mb();
    WRITE_ONCE(x, 1);

.. note::
   The compiler may still reorder accesses that are not marked as such,
   so the markings are needed in any case.

.. code-block:: c

   int not_prose = 1;

.. toctree::
   :maxdepth: 1

   other-page

=====  ==========
Name   Meaning
=====  ==========
mb     full barrier
=====  ==========

- first item of the list,
  continued here
- second item of the list

relaxed
    Accesses that are not ordered by the barrier at all in this case.
"""


def test_rst_blocks():
    blocks = rst_to_blocks(RST)
    assert blocks[0] == ("h", "Memory Barrier Helpers")
    assert blocks[1] == ("p", "This document describes the memory barrier helpers and explains when the kernel "
                              "uses them, with smp_mb and READ_ONCE() as examples. See the locking guide for "
                              "the rest of the story.")  # inline markup gone, lines re-flowed
    assert blocks[2] == ("h", "Usage")
    assert blocks[3] == ("p", "Call the helper before the store, for example:")  # the literal block dropped
    assert blocks[4] == ("p", "The compiler may still reorder accesses that are not marked as such, so the "
                              "markings are needed in any case.")  # admonition body kept as prose
    assert blocks[5:] == [
        ("li", "- first item of the list, continued here"),
        ("li", "- second item of the list"),
        ("dt", "relaxed"),
        ("p", "Accesses that are not ordered by the barrier at all in this case."),
    ]
    text = " ".join(t for _, t in blocks)
    for gone in ("smp_mb();", "not_prose", "maxdepth", "other-page", "full barrier", "SPDX", "Author"):
        assert gone not in text


def test_linux_doc_documents():
    docs = linux_doc_docs(RST)
    assert len(docs) == 2
    assert docs[0].startswith("Memory Barrier Helpers\n\nThis document describes")
    assert docs[1].startswith("Usage\n\nCall the helper")
    assert "- first item of the list, continued here\n- second item of the list" in docs[1]
    assert "relaxed\nAccesses that are not ordered" in docs[1]


# ---- Shakespeare and KJV ----------------------------------------------------------------------------

PLAY = """# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**  
Who's there?

**FRANCISCO**  
Nay, answer me: stand, and unfold yourself.

**HAMLET**  
_\\[Aside]_  
A little more than kin, and less than kind,  
And this line too is here to make the scene long enough.

_Exeunt_
"""


def test_shakespeare_markdown():
    docs = shakespeare_docs(PLAY)
    assert docs == [
        "Hamlet. Act I. Scene I. Elsinore. A platform before the castle.\n\n"
        "[FRANCISCO at his post. Enter to him BERNARDO]\n\n"
        "BERNARDO: Who's there?\n\n"
        "FRANCISCO: Nay, answer me: stand, and unfold yourself.\n\n"
        "HAMLET: [Aside] A little more than kin, and less than kind,\n"
        "And this line too is here to make the scene long enough.\n\n"
        "[Exeunt]"
    ]


def test_kjv_chapters():
    verses = [{"citation": f"Genesis 1:{v}", "text": f"Verse {v} of the first chapter.", "book": "Genesis",
               "chapter": 1, "verse": v} for v in range(1, 4)]
    verses.append({"citation": "Genesis 2:1", "text": "Thus the heavens and the earth were finished.",
                   "book": "Genesis", "chapter": 2, "verse": 1})
    docs = kjv_docs("\n".join(json.dumps(v) for v in verses))
    assert docs == [
        "Genesis 1:1-3\n\nVerse 1 of the first chapter. Verse 2 of the first chapter. Verse 3 of the first chapter.",
        "Genesis 2:1-1\n\nThus the heavens and the earth were finished.",
    ]
    assert len(kjv_docs("\n".join(json.dumps(v) for v in verses), target=40)) == 4


# ---- helpers ----------------------------------------------------------------------------------------


def test_english_filter():
    assert looks_english("The driver does not probe for devices, so you have to instantiate them.")
    assert not looks_english("0x0000 0x0004 0x0008 0x000c | RW | RW | RO")
    assert not looks_english("这是一个中文段落，用于测试过滤器是否能够拒绝非英文文本。这是一个中文段落。")
    assert not looks_english("CONFIG_FOO=y CONFIG_BAR=m CONFIG_BAZ_QUX=y CONFIG_A=y CONFIG_B=n CONFIG_C=y")


def test_chunking_keeps_paragraphs_and_headings():
    paras = [("h", "Title")] + [("p", f"Paragraph {k} " + "word " * 60) for k in range(6)]
    docs = chunk_blocks(paras, target=700, hard=2000, min_chars=10)
    assert len(docs) > 1 and docs[0].startswith("Title\n\nParagraph 0")
    assert all(len(d) <= 700 + 400 for d in docs)
    assert "".join(docs).count("Paragraph") == 6  # nothing lost, nothing repeated
    long_para = "This is a sentence. " * 400
    pieces = split_long(long_para.strip(), 1000)
    assert all(len(p) <= 1000 for p in pieces) and " ".join(pieces) == long_para.strip()


def test_heldout_split_is_stable_under_reordering():
    docs = [f"document number {k} with some text" for k in range(5000)]
    held = {d for d in docs if is_heldout(d)}
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    assert {d for d in shuffled if is_heldout(d)} == held
    assert 0.01 < len(held) / len(docs) < 0.03  # ~2%
    # and sampling under a budget does not depend on order either
    a = sample_docs(docs, 20_000, seed=0)
    b = sample_docs(shuffled, 20_000, seed=0)
    assert sorted(a) == sorted(b) and sum(map(len, a)) <= 20_000
    assert sorted(sample_docs(docs, 20_000, seed=1)) != sorted(a)


def test_allocation_caps_large_sources():
    avail = {"small": 1_000, "mid": 10_000, "big": 100_000, "huge": 1_000_000}
    alloc = allocate(avail, dict.fromkeys(avail, 1.0), 40_000, max_share=0.45)
    assert alloc["small"] == 1_000 and alloc["mid"] == 10_000
    assert alloc["big"] == alloc["huge"] == pytest.approx(14_500)
    assert sum(alloc.values()) == pytest.approx(40_000)
    alloc = allocate({"a": 10**6, "b": 100, "c": 200}, dict.fromkeys("abc", 1.0), 10_000, max_share=0.45)
    assert alloc["a"] == pytest.approx(4_500) and alloc["b"] == 100  # cap holds even if budget is left over
    # with two sources the cap is relaxed to a half (no split could satisfy 45% each)
    assert allocate({"a": 10**6, "b": 10**6}, dict.fromkeys("ab", 1.0), 10_000, 0.45)["a"] == pytest.approx(5_000)
    weighted = allocate({"a": 10**6, "b": 10**6}, {"a": 1.0, "b": 0.5}, 9_000, 0.9)
    assert weighted["a"] == pytest.approx(6_000) and weighted["b"] == pytest.approx(3_000)


def test_deb_reader_without_dpkg(tmp_path, monkeypatch):
    """The pure-Python .deb (ar + data.tar.gz) fallback."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:gz") as tf:
        for name, content in [("./usr/share/games/fortunes/wisdom", b"Be wise.\n%\n"), ("./usr/bin/x", b"bin")]:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    members = [("debian-binary", b"2.0\n"), ("control.tar.gz", b""), ("data.tar.gz", payload.getvalue())]
    ar = b"!<arch>\n"
    for name, data in members:
        ar += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            ar += b"\n"
    deb = tmp_path / "fortunes_1.0_all.deb"
    deb.write_bytes(ar)
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    got = list(iter_deb_files(deb, lambda f: f.startswith("usr/share/games/")))
    assert got == [("usr/share/games/fortunes/wisdom", b"Be wise.\n%\n")]
    assert deb_version(deb) == "1.0"


# ---- writer -> reader -------------------------------------------------------------------------------


def test_build_writes_what_iter_corpus_reads(tmp_path, monkeypatch):
    texts = {
        "alpha": [f"Alpha document {k}: the quick brown fox jumps over the lazy dog." for k in range(300)],
        "beta": [f"Beta document {k}: a stitch in time saves nine, or so they say." for k in range(300)],
    }

    def fake(name):
        def extract(cache):
            return Extracted(texts[name] + [texts[name][0]],  # one duplicate, removed by the builder
                                [{"name": name, "version": "1.0", "origin": "test", "file": "-"}],
                                {f"{name}.LICENSE.txt": "licence text"}, f"{name} licence excerpt")
        return extract

    monkeypatch.setattr(corpus_build, "SOURCES", {n: Source(n, f"{n} test source", "TEST-1.0", 1.0, fake(n)) for n in texts})
    out = tmp_path / "corpus"
    manifest = build(out, ["alpha", "beta"], max_mb=1.0, seed=0, cache=tmp_path / "cache")
    assert manifest["totals"]["documents"] == 600
    train = list(iter_records(out, "train"))
    held = list(iter_records(out, "heldout"))
    assert len(train) + len(held) == 600 and 0 < len(held) < 40
    assert {r["source"] for r in train} == {"alpha", "beta"}
    assert all(is_heldout(r["text"]) for r in held) and not any(is_heldout(r["text"]) for r in train)
    assert sorted(iter_corpus(out, "train", sources=["beta"])) == sorted(
        t for t in texts["beta"] if not is_heldout(t))
    assert list(iter_corpus(out / "train.jsonl", sources="alpha")) == [r["text"] for r in train if r["source"] == "alpha"]
    m = load_manifest(out)
    assert m["sources"]["alpha"]["licence"] == "TEST-1.0" and m["sources"]["alpha"]["packages"][0]["version"] == "1.0"
    assert m["sources"]["beta"]["est_tokens"] == m["sources"]["beta"]["characters"] // 4
    assert (out / "licenses" / "alpha.LICENSE.txt").read_text() == "licence text"
    assert "alpha licence excerpt" in (out / "SOURCES.md").read_text()
    # deterministic: a second build (cached extractions) writes the same bytes
    before = (out / "train.jsonl").read_bytes()
    build(out, ["alpha", "beta"], max_mb=1.0, seed=0, cache=tmp_path / "cache")
    assert (out / "train.jsonl").read_bytes() == before
    # a budget smaller than the sources: each is sampled, no source over its share
    m = build(tmp_path / "small", ["alpha", "beta"], max_mb=0.01, seed=0, cache=tmp_path / "cache")
    assert m["totals"]["characters"] <= 10_000
    assert all(s["characters"] <= 0.5 * 10_000 + 100 for s in m["sources"].values())


def test_corpus_path_errors_tell_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("SAESTEER_CORPUS", str(tmp_path / "nowhere"))
    with pytest.raises(CorpusNotFoundError, match=r"python scripts/build_corpus.py --out .*nowhere"):
        corpus_path()
    with pytest.raises(FileNotFoundError):
        next(iter_corpus())
    assert corpus_path(must_exist=False) == tmp_path / "nowhere"
    (tmp_path / "nowhere").mkdir()
    assert corpus_path() == tmp_path / "nowhere"
    with pytest.raises(CorpusNotFoundError):
        next(iter_corpus(split="heldout"))
    with pytest.raises(ValueError):
        next(iter_corpus(split="validation"))
    monkeypatch.delenv("SAESTEER_CORPUS")
    assert corpus_path(must_exist=False) == Path("~/.cache/saesteer/corpus").expanduser()
