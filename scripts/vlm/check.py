"""The ``check`` stage: load the shipped folder with ``saesteer.embedded.vlm.load_tiny_llava`` and measure
it, writing the figures into its training card and README.

1. tower vs teacher on held-out images (their canonical renders and 3 augmented views each, regenerated
   from the build's seeds): pooled-feature cosine, and the teacher's classifier applied to the tower's
   features vs to its own (top-1, top-5 overlap), each beside the constant predictor (training mean);
2. one-word answers on the held-out stamps and on a fixed sample of 128 training images, against the
   most-frequent-answer baseline;
3. a diagnostic of how far the features themselves carry an answer to a new stamp: 1-nearest-neighbour
   label transfer from the training images (canonical renders, centred cosine), with the teacher's pooled
   features and with the tower's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from saesteer.embedded.vlm import load_tiny_llava

from .cards import write_readme
from .projector import majority_baseline, vqa_accuracy
from .sources import split_summary
from .classes import accepted
from .teacher import classifier, feature_maps, load_teacher
from .tower import VISION_CONFIG, DistillHeads, student_outputs


def nearest_neighbour_accuracy(train: torch.Tensor, train_labels: list[str], test: torch.Tensor,
                               test_labels: list[str], centre: torch.Tensor) -> float:
    """Share of test items whose nearest training item (cosine after subtracting ``centre``) has an
    answer accepted for the test item's label."""
    sim = F.normalize(test - centre, dim=-1) @ F.normalize(train - centre, dim=-1).T
    nearest = sim.argmax(-1).tolist()
    return sum(train_labels[j] in accepted(lab) for j, lab in zip(nearest, test_labels)) / max(1, len(test_labels))


def _shipped_heads(out: Path) -> DistillHeads:
    from safetensors.torch import load_file

    heads = DistillHeads(VISION_CONFIG["hidden_size"])
    stored = {k: v.float() for k, v in load_file(out / "distill_head.safetensors").items()}
    heads.global_head.load_state_dict({k.split(".", 1)[1]: v for k, v in stored.items() if k.startswith("global_head.")})
    heads.target_mean.copy_(stored["target_mean"])
    heads.spatial_head = None
    return heads


@torch.no_grad()
def _pooled(teacher, tower, heads, x: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.cat([feature_maps(teacher, x[s:s + batch]).mean(1) for s in range(0, len(x), batch)])
    s = torch.cat([student_outputs(tower, heads, x[k:k + batch])[0] for k in range(0, len(x), batch)])
    return t, s


def _summary(*paths: Path) -> dict | None:
    """The ``summary`` of the first of ``paths`` that exists (the work folder's, else the shipped copy)."""
    for path in paths:
        if path.is_file():
            return json.loads(path.read_text())["summary"]
    return None


def run_check(a: argparse.Namespace, work: Path, out: Path) -> dict:
    from .stages import _images, tower_figures, canonical, view_plan, vqa_sets

    t0 = time.time()
    model, proc = load_tiny_llava(folder=out)
    load_s = time.time() - t0
    card_path = out / "training_card.json"
    card = json.loads(card_path.read_text())
    recs, imgs = _images(work)
    teacher = load_teacher(a.cache.expanduser())[0]
    tower, heads = model.model.vision_tower, _shipped_heads(out)
    plan, make_view = view_plan(recs, imgs, card["views_per_image"], card["seed"], card["clipart_views_per_image"])
    held = [e for e in plan if e["split"] == "heldout"]
    x = torch.stack([make_view(e) for e in held])
    maps = torch.cat([feature_maps(teacher, x[s:s + 64]) for s in range(0, len(x), 64)])
    figs = tower_figures(tower, heads, classifier(teacher).float(), x, maps, [e["kind"] for e in held])

    train, heldout = vqa_sets(work)
    sample = sorted(train, key=lambda t: hashlib.sha1(t[0].id.encode()).hexdigest())[:128]
    acc_h = vqa_accuracy(model, proc, canonical(heldout), [k for _, k, _ in heldout],
                         [r.id for r, *_ in heldout], [r.label for r, *_ in heldout])
    acc_t = vqa_accuracy(model, proc, canonical(sample), [k for _, k, _ in sample],
                         [r.id for r, *_ in sample], [r.label for r, *_ in sample])
    base = majority_baseline([k for _, k, _ in train], [k for _, k, _ in heldout], [r.label for r, *_ in heldout])

    t_tr, s_tr = _pooled(teacher, tower, heads, torch.stack(canonical(train)))
    t_he, s_he = _pooled(teacher, tower, heads, torch.stack(canonical(heldout)))
    ltr, lhe = [k for _, k, _ in train], [k for _, k, _ in heldout]
    knn = {"teacher_features": nearest_neighbour_accuracy(t_tr, ltr, t_he, lhe, heads.target_mean),
           "tower_features": nearest_neighbour_accuracy(s_tr, ltr, s_he, lhe, heads.target_mean)}

    card["check"] = {"command": "python scripts/build_vlm.py --stages data,check", "load_seconds": round(load_s, 2),
                     "model_dtype": str(next(model.parameters()).dtype), "splits": split_summary(recs),
                     "tower_vs_teacher": figs,
                     "vqa_heldout": {k: v for k, v in acc_h.items() if k != "answers"},
                     "vqa_train_sample": {k: v for k, v in acc_t.items() if k != "answers"},
                     "majority_baseline": base, "nearest_neighbour_heldout": knn,
                     "sae": _summary(work / "labels" / "labels.json", out / "labels.json"),
                     "steering": _summary(work / "steer" / "steer.json", out / "steering.json"),
                     "heldout_answers": acc_h["answers"]}
    card_path.write_text(json.dumps(card, indent=1))
    write_readme(out, card)
    print(json.dumps({k: v for k, v in card["check"].items() if k != "heldout_answers"}, indent=1))
    return card["check"]
