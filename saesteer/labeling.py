"""Label every feature of an SAE from text, with no language model in the loop.

For each feature: its top-activating contexts in the given documents (with each document's source),
the tokens it fires hardest on, where those contexts come from, and its top logit-effect tokens
(its decoder row through the final norm and the unembedding). The short label joins the three.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from saesteer.labels import FeatureLabels
from saesteer.sae.module import SAE


def _tok_text(tok: Any, ids: Sequence[int]) -> str:
    return tok.decode(list(ids), skip_special_tokens=False)


@torch.no_grad()
def logit_tokens(model: nn.Module, tok: Any, sae: SAE, top: int = 10) -> list[list[str]]:
    """Per feature, the ``top`` tokens whose logits its decoder row raises most: ``lm_head(norm(W_dec[i]))``."""
    from saesteer import adapters

    head = model.get_output_embeddings()
    norm = adapters.adapter_for(model).final_norm(model)
    out: list[list[str]] = []
    dtype = head.weight.dtype
    for rows in sae.W_dec.detach().split(512):
        h = rows.to(head.weight.device, dtype)
        if norm is not None:
            h = norm(h)
        ids = head(h).float().topk(top, dim=-1).indices
        out += [[tok.decode([int(t)]) for t in r] for r in ids]
    return out


@torch.no_grad()
def label_features(
    model: nn.Module,
    tok: Any,
    sae: SAE,
    hook: str,
    docs: Iterable[tuple[str, str]],
    *,
    context: int = 128,
    batch_size: int = 16,
    keep: int = 20,
    show: int = 5,
    window: tuple[int, int] = (12, 3),
    progress: bool = True,
) -> FeatureLabels:
    """Label every feature of ``sae`` at ``hook`` from ``docs`` = ``(text, source)`` pairs.

    Each document is cut to ``context`` tokens; position 0 (attention sink) is left out. Per
    feature the ``keep`` strongest activations are kept (for token and source statistics) and
    ``show`` of them stored as contexts (``window`` tokens before/after). Cost: one forward up to
    the hook and one full encode per batch; memory: ``keep x d_sae`` running maxima.
    """
    from saesteer.train.activations import capture_activations

    docs = list(docs)
    F = sae.d_sae
    best_v = torch.full((keep, F), -1.0)
    best_i = torch.zeros((keep, F), dtype=torch.long)  # flat index: doc * context + pos
    fired = torch.zeros(F)
    n_tokens = 0
    all_ids: list[list[int]] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    bar = tqdm(range(0, len(docs), batch_size), desc="label", disable=not progress)
    for s in bar:
        group = [tok(t, add_special_tokens=False)["input_ids"][:context] for t, _ in docs[s:s + batch_size]]
        all_ids += group
        T = max(len(g) for g in group)
        ids = torch.tensor([g + [pad] * (T - len(g)) for g in group])
        valid = torch.tensor([[0 < j < len(g) for j in range(T)] for g in group])
        x = capture_activations(model, hook, ids)  # right padding: real tokens never see pads
        f = sae.encode(x.to(sae.device, sae.dtype)).float().cpu()
        f[~valid] = 0.0
        fired += (f > 0).sum((0, 1)).float()
        n_tokens += int(valid.sum())
        flat = f.reshape(-1, F)
        k = min(keep, flat.shape[0])
        v, i = flat.topk(k, dim=0)
        rows = i // T
        flat_idx = (rows + s) * context + (i % T)
        cat_v, cat_i = torch.cat([best_v, v]), torch.cat([best_i, flat_idx])
        top = cat_v.topk(keep, dim=0).indices
        best_v, best_i = cat_v.gather(0, top), cat_i.gather(0, top)
    logits = logit_tokens(model, tok, sae)
    records = []
    for feat in range(F):
        entries = [(float(v), int(i)) for v, i in zip(best_v[:, feat], best_i[:, feat]) if v > 0]
        toks = Counter()
        srcs = Counter()
        contexts = []
        for rank, (v, i) in enumerate(entries):
            d, p = divmod(i, context)
            ids = all_ids[d]
            toks[tok.decode([ids[p]])] += 1
            srcs[docs[d][1]] += 1
            if rank < show:
                a, b = max(0, p - window[0]), min(len(ids), p + 1 + window[1])
                contexts.append({"text": _tok_text(tok, ids[a:p]) + "«" + _tok_text(tok, ids[p:p + 1]) + "»"
                                 + _tok_text(tok, ids[p + 1:b]), "value": round(v, 3), "source": docs[d][1]})
        n = max(len(entries), 1)
        records.append({
            "feature": feat,
            "density": float(fired[feat]) / max(n_tokens, 1),
            "max_activation": entries[0][0] if entries else 0.0,
            "top_tokens": [t for t, _ in toks.most_common(5)],
            "sources": {k: round(c / n, 3) for k, c in srcs.most_common()},
            "logit_tokens": logits[feat],
            "contexts": contexts,
        })
        records[-1]["label"] = short_label(records[-1])
    meta = {"hook": hook, "documents": len(docs), "tokens": n_tokens, "context": context}
    return FeatureLabels(records, meta)


def short_label(r: dict[str, Any]) -> str:
    """``'thou' 'thee' | shakespeare 90% | -> art, hast`` from a feature record; ``dead`` if it never fired."""
    if not r.get("top_tokens"):
        return "dead (never fired on the labelling text)"
    toks = " ".join(repr(t.strip() or t) for t in r["top_tokens"][:3])
    src, share = max(r["sources"].items(), key=lambda kv: kv[1])
    parts = [toks, f"{src} {share:.0%}"]
    if r.get("logit_tokens"):
        parts.append("-> " + ", ".join((t.strip() or repr(t)) for t in r["logit_tokens"][:3]))
    return " | ".join(parts)


# ------------------------------------------------------------------------------ `saesteer label`
def text_documents(paths: Sequence[str], *, min_chars: int = 200, max_docs: int | None = None) -> list[tuple[str, str]]:
    """``(text, source)`` documents from plain text files: each file is a source (its name without
    suffix), cut into paragraphs (blank-line separated) joined up to at least ``min_chars`` characters."""
    from pathlib import Path

    docs: list[tuple[str, str]] = []
    for path in paths:
        p = Path(path)
        text = p.read_text(encoding="utf-8", errors="replace")
        buf = ""
        for para in text.split("\n\n"):
            buf = f"{buf}\n\n{para}" if buf else para
            if len(buf) >= min_chars:
                docs.append((buf.strip(), p.stem))
                buf = ""
        if buf.strip():
            docs.append((buf.strip(), p.stem))
    return docs[:max_docs] if max_docs else docs


def label_main(argv: Sequence[str] | None = None) -> int:
    """``saesteer label --sae S [--model M] [--hook H] (--text-file F ... | --corpus DIR) [--out DIR]``:
    label every feature of an SAE from text, and store the labels beside it (``feature_labels.json.gz``,
    what ``saesteer features --search`` and the demo read). Cost: one forward up to the hook and one
    encode per batch of documents."""
    import argparse
    import sys
    from pathlib import Path

    from saesteer.errors import SaesteerError

    p = argparse.ArgumentParser(prog="saesteer label", description=label_main.__doc__.split("\n\n")[0])
    p.add_argument("--sae", required=True, help="the SAE folder (labels are written into it unless --out)")
    p.add_argument("--model", default="smollm2", help="'smollm2' (offline default), a folder or a hub id")
    p.add_argument("--hook", default=None, help="default: the hook the SAE records")
    p.add_argument("--text-file", action="append", default=[], metavar="F",
                   help="a plain text file (repeatable): each file is one source")
    p.add_argument("--corpus", default=None, help="a corpus folder of jsonl {text, source} (scripts/build_corpus.py)")
    p.add_argument("--split", default="heldout", choices=["train", "heldout"])
    p.add_argument("--docs", type=int, default=2000, help="at most this many documents")
    p.add_argument("--context", type=int, default=128, help="tokens per document")
    p.add_argument("--out", default=None, help="write the labels here instead of the SAE folder")
    p.add_argument("--force-hook", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--import", dest="import_from", default=None, metavar="PATH",
                   help="import explanations instead: a Neuronpedia export (.json/.jsonl/.jsonl.gz or a folder of "
                        "batch files) or a delphi explanations folder; no model is run")
    p.add_argument("--which", default=None, help="with --import: the Neuronpedia layer / delphi module to keep")
    p.add_argument("--export-neuronpedia", default=None, metavar="OUT.jsonl.gz",
                   help="write the SAE's labels as a Neuronpedia export file (needs --np-model-id, --np-layer)")
    p.add_argument("--np-model-id", default=None)
    p.add_argument("--np-layer", default=None)
    a = p.parse_args(list(argv) if argv is not None else None)
    if a.import_from or a.export_neuronpedia:
        return _import_export(a)
    try:
        if not a.text_file and not a.corpus:
            raise SaesteerError("give the text to label from: --text-file F (repeatable) or --corpus DIR "
                                "(or --import explanations)")
        import saesteer
        from saesteer.cli import load_model

        sae = saesteer.load_sae(a.sae)
        if a.corpus:
            from saesteer.data.corpus import iter_records

            docs = [(r["text"], r["source"]) for r in iter_records(a.corpus, a.split)][: a.docs]
        else:
            docs = text_documents(a.text_file, max_docs=a.docs)
        if not docs:
            raise SaesteerError("the text holds no document")
        model, tok = load_model(a.model)
        sm = saesteer.wrap(model, sae, hook=a.hook, tokenizer=tok, force_hook=a.force_hook)
        hook, placed = sm.attachment_name(), sm.sae
        labels = label_features(model, tok, placed, hook, docs, context=a.context, progress=not a.no_progress)
        labels.meta.update(model=a.model, sources=sorted({s for _, s in docs}))
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
        out = labels.save(a.out or a.sae)
    except (SaesteerError, OSError) as e:
        print(f"saesteer: error: {e}", file=sys.stderr)
        return 2
    dead = sum(1 for f in range(sae.d_sae) if labels.info(f)["max_activation"] <= 0)
    print(f"labelled {sae.d_sae} features of {Path(a.sae)} at {hook} from {len(docs)} documents "
          f"({labels.meta['tokens']:,} tokens; {dead} never fired): {out}")
    return 0


def _import_export(a: Any) -> int:
    """``saesteer label --import`` / ``--export-neuronpedia``: explanations in and out, no model run."""
    import sys
    from pathlib import Path

    import saesteer
    from saesteer import label_formats
    from saesteer.errors import SaesteerError

    try:
        sae = saesteer.load_sae(a.sae)
        labels = sae.labels if sae.labels is not None else FeatureLabels([], {})
        if a.import_from:
            texts, source = label_formats.read_explanations(a.import_from, which=a.which)
            bad = sorted(f for f in texts if not 0 <= f < sae.d_sae)
            if bad:
                raise SaesteerError(f"{a.import_from}: explanations of features {bad[:5]} but the SAE has d_sae={sae.d_sae}: "
                                    "not this SAE's explanations")
            labels = labels.with_explanations(texts, source)
            if a.out:
                Path(a.out).mkdir(parents=True, exist_ok=True)
            out = labels.save(a.out or a.sae)
            print(f"imported {len(texts)} explanations ({source}) into {out}")
        if a.export_neuronpedia:
            if not (a.np_model_id and a.np_layer):
                raise SaesteerError("--export-neuronpedia needs --np-model-id (e.g. gpt2-small) and --np-layer "
                                    "(e.g. 6-res-jb)")
            if not len(labels):
                raise SaesteerError("this SAE has no labels to export: make them with `saesteer label`")
            rows = label_formats.to_neuronpedia(labels, model_id=a.np_model_id, layer=a.np_layer)
            print(f"wrote {len(rows)} explanations: {label_formats.write_jsonl_gz(rows, a.export_neuronpedia)}")
    except (SaesteerError, OSError) as e:
        print(f"saesteer: error: {e}", file=sys.stderr)
        return 2
    return 0
