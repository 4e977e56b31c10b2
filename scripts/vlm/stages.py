"""The stages of ``scripts/build_vlm.py``: each takes the parsed arguments, the work folder and the export
folder, skips itself when its output exists (unless ``--force``), and returns nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import already_built, log


def stage_data(a: argparse.Namespace, work: Path, out: Path) -> None:
    from .sources import build_data, load_manifest, split_summary

    data = work / "data"
    if not already_built("data", data / "manifest.json", a.force):
        build_data(a.cache.expanduser(), data)
    log(f"[data] {split_summary(load_manifest(data))}")


def _images(work: Path, keep=None):
    """``(records, images)`` of the built data (those ``keep(record)`` accepts), images as ``load_image``."""
    from .sources import load_manifest
    from .views import load_image

    data = work / "data"
    recs = [r for r in load_manifest(data) if keep is None or keep(r)]
    return recs, [load_image(data / "images" / r.file) for r in recs]


def view_plan(recs, imgs, views: int, seed: int, clipart_views: int = 0):
    """``(plan, make_view)``: ``views`` heavy views of every tower-training stamp or photo and
    ``clipart_views`` of every clip-art image; a canonical render and 3 heavy views of every held-out
    image. Each view's seed is its position, so a plan is reproducible."""
    import torch

    from saesteer.embedded.vlm import image_tensor

    from .views import heavy_view

    photos = [im for r, im in zip(recs, imgs) if r.tower_split == "train" and im.shape[0] == 3]
    stamps = [im for r, im in zip(recs, imgs) if r.tower_split == "train" and im.shape[0] == 4]
    plan = []
    for i, r in enumerate(recs):
        if r.tower_split == "train":
            n = clipart_views if r.source == "openclipart" else views
            plan += [{"image": i, "split": "train", "kind": "heavy"} for _ in range(n)]
        else:
            plan += [{"image": i, "split": "heldout", "kind": "canonical"}]
            plan += [{"image": i, "split": "heldout", "kind": "heavy"} for _ in range(3)]
    for k, e in enumerate(plan):
        e["seed"] = seed * 1_000_003 + k

    def make_view(e: dict) -> torch.Tensor:
        if e["kind"] == "canonical":
            return image_tensor(imgs[e["image"]])
        return heavy_view(imgs[e["image"]], torch.Generator().manual_seed(e["seed"]), photos, stamps)

    return plan, make_view


def stage_teacher(a: argparse.Namespace, work: Path, out: Path) -> None:
    from .teacher import ViewStore, load_teacher

    folder = work / "teacher"
    if already_built("teacher", folder / "index.json", a.force):
        return
    recs, imgs = _images(work)
    plan, make_view = view_plan(recs, imgs, a.views, a.seed, a.clipart_views)
    model, prov = load_teacher(a.cache.expanduser())
    log(f"[teacher] {len(plan)} views of {len(recs)} images")
    ViewStore.write(folder, model, plan, make_view)
    (folder / "provenance.json").write_text(json.dumps(prov, indent=1))


def heldout_eval_set(work: Path):
    """``(x01, maps, kinds)`` of the held-out teacher views (canonical renders and heavy views)."""
    import numpy as np
    import torch

    from .teacher import ViewStore

    store = ViewStore(work / "teacher")
    idx = np.array([k for k, v in enumerate(store.index["views"]) if v["split"] == "heldout"])
    x = torch.from_numpy(np.ascontiguousarray(store.views[idx])).permute(0, 3, 1, 2).float() / 255.0
    m = torch.from_numpy(np.ascontiguousarray(store.maps[idx])).float()
    kinds = [store.index["views"][k]["kind"] for k in idx]
    return x, m, kinds


def tower_figures(tower, heads, fc, x, m, kinds) -> dict:
    from .tower import agreement

    canon = [k for k, kind in enumerate(kinds) if kind == "canonical"]
    heavy = [k for k, kind in enumerate(kinds) if kind == "heavy"]
    return {"heldout_images": agreement(tower, heads, fc, x[canon], m[canon]),
            "heldout_augmented_views": agreement(tower, heads, fc, x[heavy], m[heavy])}


def stage_tower(a: argparse.Namespace, work: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from .teacher import ViewStore, classifier, load_teacher
    from .tower import FEATURE_LAYER, VISION_CONFIG, train_tower

    folder = work / "tower"
    if already_built("tower", folder / "card.json", a.force):
        return
    store = ViewStore(work / "teacher")
    fc = classifier(load_teacher(a.cache.expanduser())[0]).float()
    x, m, kinds = heldout_eval_set(work)
    curve = []

    def on_epoch(tower, heads, epoch):
        f = tower_figures(tower, heads, fc, x, m, kinds)["heldout_images"]
        curve.append({"epoch": round(epoch, 2), **{k: round(v, 4) for k, v in f.items() if isinstance(v, float)},
                      "images": f["images"]})
        log(f"[tower] epoch {epoch:.1f} held-out images: {curve[-1]}")

    torch.manual_seed(a.seed)
    tower, heads, card = train_tower(store, a.tower_epochs, a.seed, batch=a.tower_batch, lr=a.tower_lr, on_epoch=on_epoch)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, folder / "tower.safetensors")
    save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, folder / "heads.safetensors")
    card.update(vision_config=VISION_CONFIG, feature_layer=FEATURE_LAYER, curve=curve, figures=tower_figures(tower, heads, fc, x, m, kinds))
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    log(f"[tower] {card['figures']}")


def vqa_sets(work: Path):
    """``(train, heldout)`` lists of ``(record, kind, image)`` (images as ``load_image``: RGBA stamps)
    of the stamps of a kind (``classes.stamp_kind``); held out = held out of the tower's training too."""
    from .classes import stamp_kind

    recs, imgs = _images(work, keep=lambda r: stamp_kind(r.id) is not None)
    rows = [(r, stamp_kind(r.id), im) for r, im in zip(recs, imgs)]
    return [t for t in rows if t[0].tower_split == "train"], [t for t in rows if t[0].tower_split != "train"]


def canonical(rows) -> list:
    """The model's view (``image_tensor``) of each ``(record, kind, image)`` row's image."""
    from saesteer.embedded.vlm import image_tensor

    return [image_tensor(im) for *_, im in rows]


def stage_projector(a: argparse.Namespace, work: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from saesteer.embedded.smollm2 import load_smollm2
    from saesteer.embedded.vlm import TinyLlavaProcessor, assemble_tiny_llava

    from .projector import majority_baseline, tiny_llava_config, train_projector, vqa_accuracy, warm_start_projector

    folder = work / "projector"
    if already_built("projector", folder / "card.json", a.force):
        return
    train, held = vqa_sets(work)
    lm, tok = load_smollm2(dtype=torch.bfloat16)
    tok.padding_side = "left"
    config = tiny_llava_config(tok)
    model = assemble_tiny_llava(lm, load_file(work / "tower" / "tower.safetensors"), None, config)
    proc = TinyLlavaProcessor(tok, config)
    torch.manual_seed(a.seed)
    images, labels = [im for *_, im in train], [k for _, k, _ in train]
    card = {"warm_start": warm_start_projector(model, proc, images, labels, a.warm_epochs, a.seed)}
    heldout = (canonical(held), [k for _, k, _ in held], [r.id for r, *_ in held], [r.label for r, *_ in held])

    def bf16_accuracy() -> dict:
        model.model.vision_tower.to(torch.bfloat16)
        model.model.multi_modal_projector.to(torch.bfloat16)
        return vqa_accuracy(model, proc, *heldout)

    acc = bf16_accuracy()
    card["heldout_after_warm_start"] = acc["accuracy"]
    log(f"[projector] held-out accuracy after the warm start: {acc['accuracy']:.3f}")
    if a.projector_steps:
        card.update(train_projector(model, proc, images, labels, a.projector_steps, a.projector_batch, a.seed,
                                    lr=a.projector_lr))
        acc = bf16_accuracy()
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.float().contiguous() for k, v in model.model.multi_modal_projector.state_dict().items()}
    save_file(state, folder / "projector.safetensors")
    card["heldout_bf16"] = {k: v for k, v in acc.items() if k != "answers"}
    card["baseline"] = majority_baseline(labels, heldout[1], heldout[3])
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "card.json").write_text(json.dumps({**card, "heldout_answers": acc["answers"]}, indent=1))
    log(f"[projector] held-out accuracy (bf16) {acc['accuracy']:.3f} vs baseline {card['baseline']}")


def stage_export(a: argparse.Namespace, work: Path, out: Path) -> None:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from .cards import training_card, write_readme

    out.mkdir(parents=True, exist_ok=True)
    half = lambda sd: {k: v.to(torch.float16).contiguous() for k, v in sd.items()}  # noqa: E731
    save_file(half(load_file(work / "tower" / "tower.safetensors")), out / "tower.safetensors",
              metadata={"format": "pt", "what": "transformers CLIPVisionModel state dict"})
    save_file(half(load_file(work / "projector" / "projector.safetensors")), out / "projector.safetensors",
              metadata={"format": "pt", "what": "LlavaMultiModalProjector state dict"})
    heads = load_file(work / "tower" / "heads.safetensors")
    save_file(half({k: v for k, v in heads.items() if not k.startswith("spatial_head.")}), out / "distill_head.safetensors",
              metadata={"format": "pt", "what": "pooled output -> EfficientNet-Lite0 1280-d feature (for the check)"})
    shutil.copy2(work / "projector" / "config.json", out / "config.json")
    from saesteer import load_sae, save_sae

    from .gallery import write_gallery

    save_sae(load_sae(work / "sae").to(torch.float16), out / "sae")
    shutil.copy2(work / "labels" / "labels.json", out / "labels.json")
    log(f"[export] gallery: {write_gallery(work, out)} images")
    card = training_card(a, work)
    (out / "training_card.json").write_text(json.dumps(card, indent=1))
    write_readme(out, card)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    log(f"[export] {out} ({size:.1f} MiB)")


def stage_check(a: argparse.Namespace, work: Path, out: Path) -> None:
    from .check import run_check

    run_check(a, work, out)


from .steer import stage_steer  # noqa: E402,F401  (stages of their own modules, dispatched by name)
from .vision_sae import stage_labels, stage_sae  # noqa: E402,F401
