"""Labelled activations for the report card: a labelled text set run through the model, the hooked
activation of every token kept with its label.

Labelled sets are JSON lines, one document a line: ``{"text": ..., "label": "kjv"}`` (a label per
document, every token takes it) or ``{"text": ..., "token_labels": ["O", "NAME", ...]}`` (one per token of
the model's tokenizer, special tokens included). The built-in set for the bundled SmolLM2 SAE is the
corpus's held-out split labelled by source (``corpus_labelled``). Position 0 of every document (the
attention sink, which SAEs are trained without) is left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saesteer.errors import SaesteerError


@dataclass
class Labelled:
    """Documents with a label each (``labels``) or per token (``token_labels``), label ids into ``names``."""

    texts: list[str]
    names: list[str]
    labels: list[int] | None = None
    token_labels: list[list[int]] | None = None

    def __post_init__(self) -> None:
        if (self.labels is None) == (self.token_labels is None):
            raise SaesteerError("a labelled set has a label per document or per token, not both or neither")
        n = len(self.labels if self.labels is not None else self.token_labels)  # type: ignore[arg-type]
        if n != len(self.texts) or not self.texts:
            raise SaesteerError(f"{len(self.texts)} texts but {n} label entries")
        if len(self.names) < 2:
            raise SaesteerError(f"a labelled set needs at least 2 labels, got {self.names}")


def load_labelled(path: str | Path, max_docs: int | None = None) -> Labelled:
    """Read a JSON-lines labelled set (see the module doc); SaesteerError naming the line when malformed."""
    texts, doc_labels, tok_labels, names = [], [], [], {}
    p = Path(path)
    if not p.is_file():
        raise SaesteerError(f"no labelled set at {p}")
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SaesteerError(f"{p}:{lineno}: not a JSON line ({e.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise SaesteerError(f"{p}:{lineno}: need {{\"text\": ..., \"label\": ...}} or \"token_labels\"")
            if "label" in rec:
                doc_labels.append(names.setdefault(str(rec["label"]), len(names)))
            elif isinstance(rec.get("token_labels"), list):
                tok_labels.append([names.setdefault(str(v), len(names)) for v in rec["token_labels"]])
            else:
                raise SaesteerError(f"{p}:{lineno}: no \"label\" or \"token_labels\"")
            texts.append(rec["text"])
            if max_docs is not None and len(texts) >= max_docs:
                break
    if doc_labels and tok_labels:
        raise SaesteerError(f"{p}: mixes per-document and per-token labels")
    return Labelled(texts, list(names), doc_labels or None, tok_labels or None)


def corpus_labelled(per_label: int = 40, split: str = "heldout", path: str | None = None) -> Labelled:
    """The corpus split (``scripts/build_corpus.py``), ``per_label`` documents per source, labelled by source,
    the sources interleaved (document j of every source before document j + 1 of any)."""
    from saesteer.data.corpus import iter_records

    by: dict[str, list[str]] = {}
    for rec in iter_records(path, split):
        docs = by.setdefault(rec["source"], [])
        if len(docs) < per_label:
            docs.append(rec["text"])
    names = sorted(by)
    pairs = [(by[n][j], i) for j in range(per_label) for i, n in enumerate(names) if j < len(by[n])]
    # interleaved by label, so a row budget cut anywhere keeps every label
    return Labelled([t for t, _ in pairs], names, [i for _, i in pairs])


@dataclass
class Activations:
    """``x [N, d]`` hooked activations (float32, CPU), ``labels [N]``, ``doc [N]`` document index."""

    x: torch.Tensor
    labels: torch.Tensor
    doc: torch.Tensor
    names: list[str]


@torch.no_grad()
def collect(model: Any, tokenizer: Any, hook: str, data: Labelled, *, max_len: int = 64, batch: int = 8,
            max_rows: int = 8192, progress: bool = True) -> Activations:
    """Run ``data`` through ``model`` (an HF model or SteeredModel, its bare forward) and keep the activation
    at ``hook`` of every token but position 0, with its label. Documents are cut to ``max_len`` tokens;
    collection stops at ``max_rows`` rows. Cost: one forward per document, stopped at the hook (``batch``:
    documents per progress step)."""
    from tqdm.auto import tqdm

    from saesteer import adapters
    from saesteer.runtime.taps import require, tap

    host = getattr(model, "model", model)
    point = adapters.resolve(host, hook)
    device = next((p.device for p in host.parameters()), torch.device("cpu"))
    xs, ls, ds = [], [], []
    rows = 0
    bar = tqdm(total=len(data.texts), desc="activations", unit="doc", disable=not progress)
    for i in range(0, len(data.texts), batch):
        if rows >= max_rows:
            break
        chunk = data.texts[i:i + batch]
        enc = [tokenizer(t, truncation=True, max_length=max_len)["input_ids"] for t in chunk]
        for j, ids in enumerate(enc):
            if len(ids) < 2:
                continue
            with tap(point, stop=True) as caught:
                host(input_ids=torch.tensor([ids], device=device))
            x = require(caught, point.name)[0, 1:].float().cpu()
            d = i + j
            if data.labels is not None:
                lab = torch.full((x.shape[0],), data.labels[d])
            else:
                tl = data.token_labels[d]  # type: ignore[index]
                if len(tl) < len(ids):
                    raise SaesteerError(f"document {d}: {len(tl)} token labels for {len(ids)} tokens")
                lab = torch.tensor(tl[1:len(ids)])
            xs.append(x)
            ls.append(lab)
            ds.append(torch.full((x.shape[0],), d))
            rows += x.shape[0]
        bar.update(len(chunk))
    bar.close()
    if not xs:
        raise SaesteerError("no document gave a token past position 0")
    return Activations(torch.cat(xs)[:max_rows], torch.cat(ls)[:max_rows], torch.cat(ds)[:max_rows], data.names)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def images_from_folder(path: str | Path, max_per_class: int | None = None) -> list[dict]:
    """``[{"path", "kind"}]`` from an image-folder layout, ``path/<class>/<image>`` (the class is the
    subfolder's name; files sorted by name, hidden files skipped). SaesteerError, before any image is
    read, when the folder is missing or holds fewer than 2 classes with images."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise SaesteerError(f"--images {path}: not a folder (expected one subfolder of images per class)")
    out = []
    for cls in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = sorted(f for f in cls.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        out += [{"path": str(f), "kind": cls.name} for f in files[:max_per_class]]
    kinds = sorted({o["kind"] for o in out})
    if len(kinds) < 2:
        raise SaesteerError(f"--images {path}: found images of {len(kinds)} class(es) {kinds}; the layout is "
                            f"FOLDER/<class>/<image>{'|'.join(IMAGE_SUFFIXES)} with at least 2 classes")
    return out


@torch.no_grad()
def collect_images(steered: Any, processor: Any, images: list[dict], *, hook: str | None = None,
                   progress: bool = True) -> Activations:
    """The activation of every patch token of each image (``{"path", "kind"}`` dicts, e.g.
    ``saesteer.embedded.vlm.tiny_llava_gallery()``) at the vision SAE's hook, labelled with the image's
    kind; CLS tokens are left out. Cost: the tower up to the hook, once per image."""
    from PIL import Image
    from tqdm.auto import tqdm

    from saesteer.metrics.image_activations import hooked_tokens

    names = sorted({im["kind"] for im in images})
    xs, ls, ds = [], [], []
    for d, im in enumerate(tqdm(images, desc="image activations", unit="img", disable=not progress)):
        with Image.open(im["path"]) as img:
            if hasattr(processor, "pixel_values"):  # the embedded tiny LLaVA's processor (reads alpha)
                pv = processor.pixel_values([img.convert("RGBA")])
            else:  # a transformers processor (LLaVA's AutoProcessor) or image processor
                ip = getattr(processor, "image_processor", processor)
                pv = ip(images=[img.convert("RGB")], return_tensors="pt")["pixel_values"]
        x, att = hooked_tokens(steered, pv, hook)
        x = x[0, att.point.image.cls_tokens:].float().cpu()
        xs.append(x)
        ls.append(torch.full((x.shape[0],), names.index(im["kind"])))
        ds.append(torch.full((x.shape[0],), d))
    if len(names) < 2:
        raise SaesteerError(f"images of at least 2 kinds are needed, got {names}")
    return Activations(torch.cat(xs), torch.cat(ls), torch.cat(ds), names)
