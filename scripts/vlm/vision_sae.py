"""The ``sae`` and ``labels`` stages: a TopK SAE trained with ``saesteer.train`` on the tower layer the
LLaVA reads (``hidden_states[vision_feature_layer]``, patch tokens, as LLaVA's "default" strategy feeds
them to the projector), then a label for each feature from its top-activating training stamps, and the
Monosemanticity Score (Pach et al. 2025) of the SAE's features beside the tower's raw neurons.

Labels: a feature's activation on an image is its largest activation over the patches. Its top
``TOP`` training stamps that have a kind (``classes.stamp_kind``) vote; the label is the winning kind,
``purity`` its share of the votes, and ``names`` the stamps' own names among the top images.

MS image embedder: the teacher's pooled EfficientNet-Lite0 feature (the paper uses DINOv2, not installable
here). The tower was distilled from that teacher, which favours neither side: SAE features and neurons
are scored with the same embedder on the same images.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from . import already_built, log

TOP = 10
D_SAE, K = 2048, 16


def hook_name(num_layers: int, feature_layer: int) -> str:
    """The saesteer hook of the layer the LLaVA reads (``-2`` of 4 layers -> ``vision.blocks.2``)."""
    layer = feature_layer % (num_layers + 1) - 1  # hidden_states[i] is the output of block i-1
    return f"vision.blocks.{layer}.hook_resid_post"


def load_tower(work: Path):
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModel

    card = json.loads((work / "tower" / "card.json").read_text())
    tower = CLIPVisionModel(CLIPVisionConfig(**card["vision_config"]))
    tower.load_state_dict(load_file(work / "tower" / "tower.safetensors"))
    return tower.eval(), card


@torch.no_grad()
def tower_tokens(tower, x01: torch.Tensor, layer: int, batch: int = 128) -> torch.Tensor:
    """``[B, patches, d]`` patch tokens of ``hidden_states[layer]`` for images in [0, 1]."""
    from .tower import normalise

    out = []
    for s in range(0, len(x01), batch):
        hs = tower(pixel_values=normalise(x01[s:s + batch]), output_hidden_states=True).hidden_states
        out.append(hs[layer][:, 1:])
    return torch.cat(out)


def stage_sae(a: argparse.Namespace, work: Path, out: Path) -> None:
    from saesteer.train import TrainConfig, train_sae

    from .teacher import ViewStore
    from .tower import FEATURE_LAYER

    folder = work / "sae"
    if already_built("sae", folder / "sae_weights.safetensors", a.force):
        return
    t0 = time.time()
    tower, _ = load_tower(work)
    store = ViewStore(work / "teacher")
    train = np.array([k for k, v in enumerate(store.index["views"]) if v["split"] == "train"])
    acts = []
    for s in range(0, len(train), 512):
        x = torch.from_numpy(np.ascontiguousarray(store.views[train[s:s + 512]])).permute(0, 3, 1, 2).float() / 255
        acts.append(tower_tokens(tower, x, FEATURE_LAYER).reshape(-1, tower.config.hidden_size))
    acts = torch.cat(acts)
    acts = acts[torch.randperm(len(acts), generator=torch.Generator().manual_seed(a.seed))]
    log(f"[sae] {len(acts)} patch tokens from {len(train)} training views ({time.time() - t0:.0f} s)")
    cfg = TrainConfig(architecture="topk", d_sae=D_SAE, k=K, batch_tokens=4096, total_tokens=a.sae_epochs * len(acts),
                      hook_name=hook_name(tower.config.num_hidden_layers, FEATURE_LAYER), model_name="tiny-llava tower",
                      seed=a.seed)
    blocks = list(acts.split(1 << 16))
    train_sae(blocks, cfg, folder, resume=False, progress=False,
              command="python scripts/build_vlm.py --stages sae")
    (folder / "stage.json").write_text(json.dumps({"tokens": len(acts), "views": int(len(train)),
                                                   "seconds": round(time.time() - t0, 1)}))
    log(f"[sae] trained in {time.time() - t0:.0f} s -> {folder}")


def kind_images(work: Path, split: str):
    from saesteer.embedded.vlm import image_tensor

    from .classes import stamp_kind
    from .stages import _images

    want = (lambda s: s == "train") if split == "train" else (lambda s: s != "train")
    recs, imgs = _images(work, keep=lambda r: stamp_kind(r.id) is not None and want(r.tower_split))
    x = torch.stack([image_tensor(im) for im in imgs])
    return recs, x, [stamp_kind(r.id) for r in recs], [r.label for r in recs]


def feature_image_activations(sae, tokens: torch.Tensor) -> torch.Tensor:
    """``[N, d_sae]``: each feature's largest activation over an image's patches."""
    with torch.no_grad():
        return torch.stack([sae.encode(t.to(sae.dtype)).float().amax(0) for t in tokens])


def label_features(acts: torch.Tensor, kinds: list[str], names: list[str | None]) -> list[dict]:
    """One record per feature: label, purity, votes, top names, max activation, firing share."""
    out = []
    top = acts.topk(min(TOP, len(acts)), dim=0)
    for f in range(acts.shape[1]):
        idx = [i for i, v in zip(top.indices[:, f].tolist(), top.values[:, f].tolist()) if v > 0]
        votes = Counter(kinds[i] for i in idx)
        label, n = votes.most_common(1)[0] if votes else ("", 0)
        out.append({"feature": f, "label": label, "purity": round(n / max(1, len(idx)), 3),
                    "votes": dict(votes), "names": [names[i] for i in idx if names[i]][:5],
                    "max_activation": round(float(acts[:, f].max()), 4),
                    "fires_on": round(float((acts[:, f] > 0).float().mean()), 4)})
    return out


def stage_labels(a: argparse.Namespace, work: Path, out: Path) -> None:
    from saesteer import load_sae
    from saesteer.metrics import monosemanticity_score

    from .teacher import feature_maps, load_teacher
    from .tower import FEATURE_LAYER

    folder = work / "labels"
    if already_built("labels", folder / "labels.json", a.force):
        return
    t0 = time.time()
    tower, _ = load_tower(work)
    sae = load_sae(work / "sae").eval()
    recs, x, kinds, names = kind_images(work, "train")
    tokens = tower_tokens(tower, x, FEATURE_LAYER)
    acts = feature_image_activations(sae, tokens)
    labels = label_features(acts, kinds, names)
    neurons = tokens.amax(1)  # [N, d]: each raw neuron's largest value over the patches
    teacher = load_teacher(a.cache.expanduser())[0]
    emb = torch.cat([feature_maps(teacher, x[s:s + 64]).mean(1) for s in range(0, len(x), 64)])
    ms_sae = monosemanticity_score(acts, emb)
    ms_neu = monosemanticity_score(neurons - neurons.min(0).values, emb)
    for rec, ms in zip(labels, ms_sae.tolist()):
        rec["ms"] = None if ms != ms else round(ms, 4)
    alive = ms_sae[~ms_sae.isnan()]
    summary = {"images": len(recs), "features": len(labels), "alive_features": int(len(alive)),
               "ms_sae_mean": float(alive.mean()), "ms_sae_median": float(alive.median()),
               "ms_neurons_mean": float(ms_neu[~ms_neu.isnan()].mean()),
               "ms_neurons_median": float(ms_neu[~ms_neu.isnan()].median()),
               "ms_sae_top10pct_mean": float(alive.sort(descending=True).values[:max(1, len(alive) // 10)].mean()),
               "ms_neurons_top10pct_mean": float(ms_neu.sort(descending=True).values[:max(1, len(ms_neu) // 10)].mean()),
               "clear_features": sum(1 for r in labels if r["purity"] >= 0.8 and sum(r["votes"].values()) >= 5),
               "embedder": "EfficientNet-Lite0 pooled feature (the teacher)", "seconds": round(time.time() - t0, 1)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.json").write_text(json.dumps({"summary": summary, "features": labels}))
    log(f"[labels] {summary}")
