"""The ``steer`` stage: clamp one labelled SAE feature in the tower layer the LLaVA reads and see whether
the one-word answer about a held-out image of *another* kind moves to the feature's kind.

For each chosen feature (the clearest feature of each kind: purity >= ``MIN_PURITY`` over its top
training stamps, ties broken by MS; at least ``MIN_FEATURES``), on up to ``PER_FEATURE`` held-out stamps
whose kind differs from the label, the feature is clamped at every image token to ``ALPHA`` x its largest
activation on the training stamps (``ALPHA`` = 10 was chosen on *training* stamps of other kinds: of 2, 5,
10 and 20 it moved most answers to the label for the first three chosen features), two ways:

* ``error``: saesteer's default edit, ``x + decode(f') - decode(f)`` (the SAE's error term kept);
* ``reconstruct``: sae-for-vlm's semantics (``saesteer.sae_for_vlm``): ``x`` replaced by ``decode(f')``.

Figures per mode: the share of answers that change; the share that become the feature's kind (an
accepted answer for it, ``classes.accepted``, that the unsteered answer was not); and a steering score in the manner of sae-for-vlm: the
mean change, steered minus unsteered, of the cosine between the answer's text embedding and the kind's
(text embedder: SmolLM2's input embeddings, the mean over a word's tokens; the paper uses CLIP's text
encoder, not available here). The unsteered reconstruction alone (``sae_for_vlm({})``) is scored too:
how often replacing the activations by the SAE's reconstruction changes an answer with no edit at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import already_built, log

MIN_PURITY, MIN_FEATURES, PER_FEATURE, ALPHA = 0.8, 10, 30, 10.0


def choose_features(labels: list[dict], kinds: set[str]) -> list[dict]:
    """The clearest feature per kind (see the module docstring), best first."""
    clear = [r for r in labels if r["label"] in kinds and r["purity"] >= MIN_PURITY and sum(r["votes"].values()) >= 5]
    clear.sort(key=lambda r: (-r["purity"], -(r.get("ms") or 0.0)))
    best: dict[str, dict] = {}
    for r in clear:
        best.setdefault(r["label"], r)
    chosen = list(best.values())
    for r in clear:  # fewer kinds than MIN_FEATURES: add the next clearest features
        if len(chosen) >= MIN_FEATURES:
            break
        if r not in chosen:
            chosen.append(r)
    return chosen


def word_vectors(model, tokenizer, words: list[str]) -> torch.Tensor:
    emb = model.get_input_embeddings().weight.detach().float()
    return torch.stack([emb[tokenizer(" " + (w or "none"), add_special_tokens=False).input_ids].mean(0) for w in words])


def _answers(steered, proc, images: list[torch.Tensor], edits=None, batch: int = 32) -> list[str]:
    from .stamp_labels import normalise_answer

    words = []
    for s in range(0, len(images), batch):
        inputs = proc(images[s:s + batch])
        out = steered.generate(**inputs, edits=edits, max_new_tokens=3, do_sample=False)
        words += [normalise_answer(t) for t in proc.decode(out, inputs)]
    return words


def stage_steer(a: argparse.Namespace, work: Path, out: Path) -> None:
    import saesteer
    from saesteer.embedded.vlm import load_tiny_llava

    from .classes import KINDS, accepted
    from .vision_sae import kind_images

    folder = work / "steer"
    if already_built("steer", folder / "steer.json", a.force):
        return
    t0 = time.time()
    model, proc = load_tiny_llava(dtype=torch.bfloat16, folder=out)
    steered = saesteer.wrap(model, out / "sae")
    labels = json.loads((work / "labels" / "labels.json").read_text())["features"]
    chosen = choose_features(labels, set(KINDS))
    recs, x, kinds, names = kind_images(work, "heldout")
    order = sorted(range(len(recs)), key=lambda i: hashlib.sha1(recs[i].id.encode()).hexdigest())
    images = [x[i] for i in range(len(recs))]
    base = _answers(steered, proc, images)
    recon = _answers(steered, proc, images, saesteer.sae_for_vlm({}))
    vec = lambda ws: F.normalize(word_vectors(model, proc.tokenizer, ws), dim=-1)  # noqa: E731
    rows = []
    for rec in chosen:
        f, kind, value = rec["feature"], rec["label"], ALPHA * rec["max_activation"]
        idx = [i for i in order if kinds[i] != kind][:PER_FEATURE]
        target = vec([kind])[0]
        row = {"feature": f, "label": kind, "purity": rec["purity"], "ms": rec.get("ms"), "value": round(value, 3),
               "images": len(idx)}
        b = [base[i] for i in idx]
        for mode, edits in (("error", {f: value}), ("reconstruct", saesteer.sae_for_vlm({f: value}))):
            ans = _answers(steered, proc, [images[i] for i in idx], edits)
            changed = sum(s != u for s, u in zip(ans, b)) / len(idx)
            toward = sum(s in accepted(kind) and u not in accepted(kind) for s, u in zip(ans, b)) / len(idx)
            score = float(((vec(ans) - vec(b)) @ target).mean())
            row[mode] = {"changed": round(changed, 3), "to_label": round(toward, 3), "steering_score": round(score, 4),
                         "examples": [[recs[i].id, u, s] for i, u, s in zip(idx, b, ans)][:6]}
        rows.append(row)
        log(f"[steer] feature {f} ({kind}): error {row['error']['to_label']:.2f} to label / "
            f"{row['error']['changed']:.2f} changed; reconstruct {row['reconstruct']['to_label']:.2f} / "
            f"{row['reconstruct']['changed']:.2f}")
    mean = lambda mode, key: round(sum(r[mode][key] for r in rows) / max(1, len(rows)), 4)  # noqa: E731
    summary = {"features": len(rows), "alpha": ALPHA, "heldout_images": len(recs),
               **{f"{m}_{k}": mean(m, k) for m in ("error", "reconstruct") for k in ("changed", "to_label", "steering_score")},
               "reconstruction_alone_changed": round(sum(r != b for r, b in zip(recon, base)) / len(base), 4),
               "seconds": round(time.time() - t0, 1)}
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"summary": summary, "features": rows}, indent=1)
    (folder / "steer.json").write_text(text)
    (out / "steering.json").write_text(text)  # shipped: the tests replay some of it
    log(f"[steer] {summary}")
