"""The ``steer`` stage: clamp one labelled SAE feature in the tower layer the LLaVA reads and see whether
the one-word answer about a held-out image of *another* kind moves to the feature's kind.

Features are chosen on training stamps only, then measured on held-out stamps:

1. **Candidates**: every feature with a clear label, purity >= ``MIN_PURITY`` (that share of its top
   training stamps are of one kind, at least 5 votes), for a kind the model is asked about.
2. **Screening** (training stamps): each candidate is clamped at every image token to ``alpha`` x its
   largest activation on the training stamps, for each ``alpha`` in ``ALPHAS``, on ``SCREEN`` training
   stamps of other kinds whose unsteered answer is not already the label. A candidate's ``alpha`` is the
   one that moved most answers to its label (the smaller on ties); candidates that moved at least
   ``SCREEN_MIN`` of them are kept, best first, at most ``MAX_FEATURES``.
3. **Held out**: each kept feature at its ``alpha``, on up to ``PER_FEATURE`` held-out stamps of other
   kinds, two ways:

   * ``error``: saesteer's default edit, ``x + decode(f') - decode(f)`` (the SAE's error term kept);
   * ``reconstruct``: sae-for-vlm's semantics (``saesteer.sae_for_vlm``): ``x`` replaced by ``decode(f')``.

Figures per mode: the share of answers that change; the share that become the feature's kind (an
accepted answer for it, ``classes.accepted``, that the unsteered answer was not); a steering score in
the manner of sae-for-vlm: the mean change, steered minus unsteered, of the cosine between the answer's
text embedding and the kind's (text embedder: SmolLM2's input embeddings, the mean over a word's tokens;
the paper uses CLIP's text encoder, not available here); and ``toward_concept``, how many features moved
at least one held-out answer to their kind with a positive mean score. The unsteered reconstruction alone
(``sae_for_vlm({})``) is scored too: how often replacing the activations by the SAE's reconstruction
changes an answer with no edit at all.

Inputs: the data stage's images and the exported model, SAE and ``labels.json`` (``--out``), so
``--stages data,steer`` re-runs this on the shipped files without retraining anything.
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

MIN_PURITY, SCREEN, SCREEN_MIN, MAX_FEATURES, PER_FEATURE = 0.6, 12, 0.25, 20, 30
ALPHAS = (2.0, 3.0, 5.0, 10.0, 20.0)


def candidates(labels: list[dict], kinds: set[str]) -> list[dict]:
    """Features with a clear label for one of ``kinds`` (see the module docstring), clearest first
    (purity, then MS)."""
    clear = [r for r in labels if r["label"] in kinds and r["purity"] >= MIN_PURITY and sum(r["votes"].values()) >= 5]
    return sorted(clear, key=lambda r: (-r["purity"], -(r.get("ms") or 0.0)))


def keep_screened(screened: list[dict]) -> list[dict]:
    """Candidates whose best ``alpha`` moved at least ``SCREEN_MIN`` of their training stamps to the
    label, most moved first (then purity), at most ``MAX_FEATURES``."""
    kept = [r for r in screened if r["screen"]["to_label"] >= SCREEN_MIN]
    kept.sort(key=lambda r: (-r["screen"]["to_label"], -r["purity"]))
    return kept[:MAX_FEATURES]


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


def _sha_order(recs) -> list[int]:
    return sorted(range(len(recs)), key=lambda i: hashlib.sha1(recs[i].id.encode()).hexdigest())


def screen(steered, proc, rec: dict, images: list[torch.Tensor], kinds: list[str], base: list[str]) -> dict:
    """Step 2 of the module docstring for one candidate, on training stamps: ``{"alpha", "to_label",
    "images", "per_alpha"}``."""
    from .classes import accepted

    kind, ok = rec["label"], accepted(rec["label"])
    idx = [i for i in range(len(images)) if kinds[i] != kind and base[i] not in ok][:SCREEN]
    per_alpha = {}
    for alpha in ALPHAS:
        ans = _answers(steered, proc, [images[i] for i in idx], {rec["feature"]: alpha * rec["max_activation"]})
        per_alpha[alpha] = round(sum(w in ok for w in ans) / max(1, len(idx)), 3)
    best = max(ALPHAS, key=lambda al: (per_alpha[al], -al))
    return {"alpha": best, "to_label": per_alpha[best], "images": len(idx), "per_alpha": per_alpha}


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
    labels = json.loads((out / "labels.json").read_text())["features"]
    vec = lambda ws: F.normalize(word_vectors(model, proc.tokenizer, ws), dim=-1)  # noqa: E731

    # steps 1-2: candidates screened on training stamps
    trecs, tx, tkinds, _ = kind_images(work, "train")
    torder = _sha_order(trecs)
    timages, tkinds = [tx[i] for i in torder], [tkinds[i] for i in torder]
    tbase = _answers(steered, proc, timages)
    screened = []
    for rec in candidates(labels, set(KINDS)):
        screened.append({**rec, "screen": screen(steered, proc, rec, timages, tkinds, tbase)})
        log(f"[steer] screen feature {rec['feature']} ({rec['label']}, purity {rec['purity']}): "
            f"{screened[-1]['screen']['per_alpha']}")
    chosen = keep_screened(screened)

    # step 3: held out
    recs, x, kinds, names = kind_images(work, "heldout")
    order = _sha_order(recs)
    images = [x[i] for i in range(len(recs))]
    base = _answers(steered, proc, images)
    recon = _answers(steered, proc, images, saesteer.sae_for_vlm({}))
    rows = []
    for rec in chosen:
        f, kind, alpha = rec["feature"], rec["label"], rec["screen"]["alpha"]
        value = alpha * rec["max_activation"]
        idx = [i for i in order if kinds[i] != kind][:PER_FEATURE]
        target = vec([kind])[0]
        row = {"feature": f, "label": kind, "purity": rec["purity"], "ms": rec.get("ms"), "alpha": alpha,
               "value": round(value, 3), "screen": rec["screen"], "images": len(idx)}
        b = [base[i] for i in idx]
        for mode, edits in (("error", {f: value}), ("reconstruct", saesteer.sae_for_vlm({f: value}))):
            ans = _answers(steered, proc, [images[i] for i in idx], edits)
            changed = sum(s != u for s, u in zip(ans, b)) / len(idx)
            toward = sum(s in accepted(kind) and u not in accepted(kind) for s, u in zip(ans, b)) / len(idx)
            score = float(((vec(ans) - vec(b)) @ target).mean())
            row[mode] = {"changed": round(changed, 3), "to_label": round(toward, 3), "steering_score": round(score, 4),
                         "examples": [[recs[i].id, u, s] for i, u, s in zip(idx, b, ans)][:6]}
        rows.append(row)
        log(f"[steer] feature {f} ({kind}, alpha {alpha}): error {row['error']['to_label']:.2f} to label / "
            f"{row['error']['changed']:.2f} changed; reconstruct {row['reconstruct']['to_label']:.2f} / "
            f"{row['reconstruct']['changed']:.2f}")
    mean = lambda mode, key: round(sum(r[mode][key] for r in rows) / max(1, len(rows)), 4)  # noqa: E731
    toward = lambda mode: sum(r[mode]["to_label"] > 0 and r[mode]["steering_score"] > 0 for r in rows)  # noqa: E731
    summary = {"candidates": len(screened), "min_purity": MIN_PURITY, "screen_images": SCREEN,
               "screen_kept": len(chosen), "features": len(rows), "alphas": list(ALPHAS),
               "heldout_images": len(recs),
               **{f"{m}_{k}": mean(m, k) for m in ("error", "reconstruct") for k in ("changed", "to_label", "steering_score")},
               "error_toward_concept": toward("error"), "reconstruct_toward_concept": toward("reconstruct"),
               "reconstruction_alone_changed": round(sum(r != b for r, b in zip(recon, base)) / len(base), 4),
               "seconds": round(time.time() - t0, 1)}
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"summary": summary, "features": rows,
                       "screened": [{k: r[k] for k in ("feature", "label", "purity", "screen")} for r in screened]},
                      indent=1)
    (folder / "steer.json").write_text(text)
    (out / "steering.json").write_text(text)  # shipped: the tests replay some of it
    log(f"[steer] {summary}")
