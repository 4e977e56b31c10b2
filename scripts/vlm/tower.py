"""The student: a small ``CLIPVisionModel`` distilled from EfficientNet-Lite0's feature maps.

Its 7x7 patch grid (224 px images, 32 px patches) lines up with the teacher's 7x7 map, so two linear
heads read it: ``global`` (pooled output -> the teacher's 1280-d pooled feature, which the teacher's
classifier reads) and ``spatial`` (the patch tokens of the layer LLaVA reads, ``hidden_states[FEATURE_LAYER]``,
-> the teacher's feature at that cell). Loss per head: ``1 - cos + MSE / var(target)``, spatial weighted
``SPATIAL_WEIGHT``. A view is also used mirrored (the map mirrored with it), which doubles the views for free.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import log
from .teacher import DIM, ViewStore

FEATURE_LAYER = -2      # what the LLaVA reads (the last layer only feeds the pooled CLS token)
SPATIAL_WEIGHT = 0.5
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
VISION_CONFIG = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                     image_size=224, patch_size=32, num_channels=3, projection_dim=256, hidden_act="quick_gelu")


class DistillHeads(nn.Module):
    """The two linear read-outs used only to train (and measure) the tower, and the mean pooled target
    of the training views (the constant predictor every figure is compared with)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.global_head = nn.Linear(hidden, DIM)
        self.spatial_head = nn.Linear(hidden, DIM)
        self.register_buffer("target_mean", torch.zeros(DIM))


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def student_outputs(tower: nn.Module, heads: DistillHeads, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(global [B, 1280], spatial [B, 49, 1280] or None without a spatial head)`` for images in [0, 1]
    (resized to the tower's input size when they differ)."""
    size = tower.config.image_size
    if x01.shape[-1] != size:
        x01 = F.interpolate(x01, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = tower(pixel_values=normalise(x01), output_hidden_states=True)
    spatial = None if heads.spatial_head is None else heads.spatial_head(out.hidden_states[FEATURE_LAYER][:, 1:])
    return heads.global_head(out.pooler_output), spatial


def _loss(pred: torch.Tensor, target: torch.Tensor, var: float) -> torch.Tensor:
    cos = F.cosine_similarity(pred, target, dim=-1).mean()
    return (1 - cos) + F.mse_loss(pred, target) / var


def _batch(store: ViewStore, idx: np.ndarray, flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    order = np.sort(idx)  # memmap reads in file order
    x = torch.from_numpy(np.ascontiguousarray(store.views[order])).permute(0, 3, 1, 2).float() / 255.0
    m = torch.from_numpy(np.ascontiguousarray(store.maps[order])).float()
    if flip is not None and flip.any():
        x[flip] = x[flip].flip(-1)
        m[flip] = m[flip].view(-1, 7, 7, DIM).flip(2).reshape(-1, 49, DIM)
    return x, m


def train_tower(store: ViewStore, epochs: float, seed: int, batch: int = 64, lr: float = 1e-3,
                on_epoch=None, fc: nn.Linear | None = None, kd_weight: float = 0.0, kd_temperature: float = 2.0,
                vision_config: dict | None = None) -> tuple[nn.Module, DistillHeads, dict]:
    """Train the student on the store's training views. Cost: ~``epochs * N / 120`` s on 2 idle cores
    (forward + backward of a 3.4M-parameter ViT on 50 tokens per view, bf16 autocast)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    vision_config = dict(vision_config or VISION_CONFIG)
    tower = CLIPVisionModel(CLIPVisionConfig(**vision_config))
    heads = DistillHeads(vision_config["hidden_size"])
    train = np.array([k for k, v in enumerate(store.index["views"]) if v["split"] == "train"])
    sample = np.random.default_rng(seed).choice(train, size=min(512, len(train)), replace=False)
    _, m = _batch(store, sample)
    var_g, var_s = float(m.mean(1).var(0).mean()), float(m.var((0, 1)).mean())
    heads.target_mean.copy_(m.mean((0, 1)))
    params = [*tower.parameters(), *heads.parameters()]
    decay = [p for p in params if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=lr)
    steps = max(1, int(epochs * len(train) / batch))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    rng = np.random.default_rng(seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)
    per_epoch = max(1, len(train) // batch)
    t0, hist = time.time(), []
    tower.train()
    for step in range(steps):
        if step % per_epoch == 0:
            perm = rng.permutation(train)
        idx = perm[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        x, m = _batch(store, idx, torch.rand(len(idx), generator=gen) < 0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # ~1.3x faster on CPUs with bf16 support
            pg, ps = student_outputs(tower, heads, x)
        loss = _loss(pg.float(), m.mean(1), var_g) + SPATIAL_WEIGHT * _loss(ps.float(), m, var_s)
        if kd_weight:
            t = kd_temperature
            loss = loss + kd_weight * t * t * F.kl_div(F.log_softmax(fc(pg.float()) / t, -1),
                                                       F.log_softmax(fc(m.mean(1)) / t, -1),
                                                       log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        hist.append(float(loss.detach()))
        if (step + 1) % 50 == 0 or step + 1 == steps:
            log(f"[tower] step {step + 1}/{steps} loss {np.mean(hist[-50:]):.4f} "
                f"({(step + 1) * batch / (time.time() - t0):.0f} views/s)")
        if on_epoch is not None and ((step + 1) % per_epoch == 0 or step + 1 == steps):
            tower.eval()
            on_epoch(tower, heads, (step + 1) / per_epoch)
            tower.train()
    card = {"steps": steps, "batch": batch, "lr": lr, "epochs": epochs, "train_views": int(len(train)),
            "kd_weight": kd_weight, "kd_temperature": kd_temperature, "vision_config": vision_config,
            "final_loss": float(np.mean(hist[-50:])), "target_variance": {"global": var_g, "spatial": var_s},
            "seconds": round(time.time() - t0, 1)}
    return tower.eval(), heads.eval(), card


def _classifier_agreement(fc: nn.Linear, pred: torch.Tensor, target: torch.Tensor) -> dict:
    t5s, t5t = fc(pred).topk(5, -1).indices, fc(target).topk(5, -1).indices
    overlap = (t5s[:, :, None] == t5t[:, None, :]).any(-1).float().sum(-1) / 5
    return {"top1_agreement": float((t5s[:, 0] == t5t[:, 0]).float().mean()),
            "top5_overlap": float(overlap.mean()),
            "teacher_top1_in_student_top5": float((t5s == t5t[:, :1]).any(-1).float().mean())}


@torch.no_grad()
def agreement(tower: nn.Module, heads: DistillHeads, fc: nn.Linear, x01: torch.Tensor, maps: torch.Tensor,
              batch: int = 64) -> dict:
    """Student vs teacher on the given images: cosine of pooled features (raw, and centred on the
    training views' mean feature), of per-cell features (with a spatial head), and how the teacher's
    classifier ranks classes on the student's pooled feature vs its own (top-1 agreement, top-5 overlap
    ``|top5_s & top5_t| / 5``, teacher top-1 within student top-5). ``baseline`` holds the same figures
    for the constant predictor (the training mean feature): the floor the tower must clear."""
    pg, ps = [], []
    for s in range(0, len(x01), batch):
        g, sp = student_outputs(tower, heads, x01[s:s + batch])
        pg.append(g)
        ps.append(sp)
    pg, tg, mu = torch.cat(pg), maps.mean(1), heads.target_mean
    const = mu.expand_as(tg)
    cos = lambda a, b: float(F.cosine_similarity(a, b, dim=-1).mean())  # noqa: E731
    out = {"images": len(x01), "cosine_pooled": cos(pg, tg), "cosine_pooled_centred": cos(pg - mu, tg - mu),
           **_classifier_agreement(fc, pg, tg)}
    if ps[0] is not None:
        out["cosine_cells"] = cos(torch.cat(ps), maps)
    out["baseline"] = {"cosine_pooled": cos(const, tg), **_classifier_agreement(fc, const, tg)}
    return out
