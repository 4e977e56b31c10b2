"""Coverage and board reconstruction (Karvonen et al., arXiv 2408.00113; SEED_METHODS §1).

Both score SAE features against board-state labels: ``acts`` float (N, F), one row per position
(e.g. an SAE's code on `model.residual_stream` at the valid positions), and ``labels`` bool
(N, S, C) (``BoardLabels.flat()``: S = 64 squares, C classes) with ``scored`` the classes that
count (the blank-masked variant leaves blank out).

Thresholds. Dead features (never > 0 on ``acts``) are dropped. For threshold fraction t in
``thresholds`` (default 0, 0.1, ..., 1.0) a feature is *on* at a position when its activation
> t x its maximum activation (the maximum over the positions it is calibrated on).

`coverage`: for every (t, feature, square, class), precision = TP / #on, recall = TP / #label,
F1 = 2PR / (P + R + eps) with eps = 1e-8 in every denominator (as SAE_BoardGameEval's
``get_F1_per_feature``). Take the max over features, average over the S x |scored| (square,
class) pairs, then the max over t.

`board_reconstruction`: on the train split, a feature is labelled with (square, class) when
P(class on square | feature on) >= 0.95 and the count of such positions is >= 10 (scored
classes only). On the test split the predicted board at a position is the union of the labels
of its active features. Per-class F1 counts every predicted (square, class) entry; per-square F1
(the one used to pick t, as ``full_pipeline.py``) counts a square predicted both rightly and
wrongly as a false positive only (``calculate_F1_scores``' adjustment). Both are computed over
the scored classes of the true board (saesteer's reading: the masked class can be neither
predicted nor missed). The reference also fills its last threshold slot with each feature's
highest active threshold; that variant is not implemented here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

EPS = 1e-8
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(11))


def _prep(acts, labels, scored: Optional[Sequence[int]]):
    a = torch.as_tensor(np.asarray(acts), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels)).bool()
    if a.ndim != 2 or y.ndim != 3 or a.shape[0] != y.shape[0]:
        raise ValueError(f"acts must be (N, F) and labels (N, S, C) with the same N; got {tuple(a.shape)}, {tuple(y.shape)}")
    sc = list(range(y.shape[2])) if scored is None else list(scored)
    return a, y, sc


def alive_features(acts) -> np.ndarray:
    """Indices of the features that are > 0 somewhere in ``acts`` (N, F)."""
    a = torch.as_tensor(np.asarray(acts), dtype=torch.float32)
    return torch.nonzero(a.max(0).values > 0).flatten().numpy()


def _on_counts(a: torch.Tensor, y: torch.Tensor, thr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TP (T, F, S, C) = #positions where the feature is on and the label holds; #on (T, F)."""
    N, S, C = y.shape
    yf = y.reshape(N, S * C).float()
    tp, on_n = [], []
    for t in range(thr.shape[0]):
        on = (a > thr[t][None]).float()  # (N, F)
        tp.append((on.T @ yf).reshape(-1, S, C))
        on_n.append(on.sum(0))
    return torch.stack(tp), torch.stack(on_n)


def coverage(
    acts, labels, scored: Optional[Sequence[int]] = None, thresholds: Sequence[float] = THRESHOLDS
) -> dict:
    """The paper's coverage of a BSP by SAE features (module docstring). Returns
    ``{"coverage": float, "best_threshold": t, "per_threshold": [avg best F1 per t], "n_alive": F'}``.
    Costs one (F x N) @ (N x S*C) product per threshold (seconds for 4k features x 10k
    positions x 192 labels)."""
    a, y, sc = _prep(acts, labels, scored)
    alive = torch.as_tensor(alive_features(a))
    a = a[:, alive]
    thr = torch.tensor(list(thresholds), dtype=torch.float32)[:, None] * a.max(0).values[None]
    tp, on_n = _on_counts(a, y, thr)
    n_label = y.sum(0).float()  # (S, C)
    precision = tp / (on_n[:, :, None, None] + EPS)
    recall = tp / (n_label[None, None] + EPS)
    f1 = 2 * precision * recall / (precision + recall + EPS)
    best = f1.max(1).values[..., sc] if len(alive) else torch.zeros(len(thr), y.shape[1], len(sc))
    per_t = best.sum((1, 2)) / (y.shape[1] * len(sc))
    i = int(per_t.argmax())
    return {"coverage": float(per_t[i]), "best_threshold": float(thresholds[i]), "per_threshold": per_t.tolist(), "n_alive": int(len(alive))}


def label_features(
    acts,
    labels,
    scored: Optional[Sequence[int]] = None,
    thresholds: Sequence[float] = THRESHOLDS,
    precision: float = 0.95,
    min_count: int = 10,
) -> dict:
    """Label features on a train split: bool (T, F', S, C) of (square, class) labels per
    threshold, with the alive feature indices and the absolute thresholds (T, F') used."""
    a, y, sc = _prep(acts, labels, scored)
    alive = torch.as_tensor(alive_features(a))
    a = a[:, alive]
    thr = torch.tensor(list(thresholds), dtype=torch.float32)[:, None] * a.max(0).values[None]
    tp, on_n = _on_counts(a, y, thr)
    lab = (tp / (on_n[:, :, None, None] + EPS) >= precision) & (tp >= min_count)
    keep = torch.zeros(y.shape[2], dtype=torch.bool)
    keep[sc] = True
    return {"labels": lab & keep, "alive": alive.numpy(), "thresholds": thr}


def board_reconstruction(
    train_acts,
    train_labels,
    test_acts,
    test_labels,
    scored: Optional[Sequence[int]] = None,
    thresholds: Sequence[float] = THRESHOLDS,
    precision: float = 0.95,
    min_count: int = 10,
) -> dict:
    """The paper's board reconstruction (module docstring): label features on the train split,
    predict the test boards from the active features' labels, score by F1. Returns per-threshold
    lists ``f1_per_square``, ``f1_per_class``, ``precision_per_square``, ``recall_per_square``
    and the best ``f1`` (per square) with its ``best_threshold``. Costs two `_on_counts`-sized
    products per threshold."""
    fl = label_features(train_acts, train_labels, scored, thresholds, precision, min_count)
    a, y, sc = _prep(test_acts, test_labels, scored)
    a = a[:, torch.as_tensor(fl["alive"])]
    N, S, C = y.shape
    keep = torch.zeros(C, dtype=torch.bool)
    keep[sc] = True
    truth = y & keep
    out = {k: [] for k in ("f1_per_square", "f1_per_class", "precision_per_square", "recall_per_square")}
    for t in range(len(thresholds)):
        on = (a > fl["thresholds"][t][None]).float()
        pred = (on @ fl["labels"][t].reshape(-1, S * C).float()).reshape(N, S, C) > 0
        tp_e, fp_e = pred & truth, pred & ~truth
        tp, fp, fn = float(tp_e.sum()), float(fp_e.sum()), float((~pred & truth).sum())
        p, r = tp / (tp + fp + EPS), tp / (tp + fn + EPS)
        out["f1_per_class"].append(2 * p * r / (p + r + EPS))
        both = float((tp_e.any(-1) & fp_e.any(-1)).sum())  # squares with a right and a wrong class
        atp = tp - both
        p, r = atp / (atp + fp + EPS), atp / (atp + fn + EPS)
        out["precision_per_square"].append(p)
        out["recall_per_square"].append(r)
        out["f1_per_square"].append(2 * p * r / (p + r + EPS))
    i = int(np.argmax(out["f1_per_square"]))
    out.update(f1=out["f1_per_square"][i], best_threshold=float(thresholds[i]), n_labelled=int(fl["labels"][i].any((1, 2)).sum()))
    return out


@torch.no_grad()
def sae_codes(model, sae, moves: np.ndarray, layer: int, batch: int = 250) -> tuple[torch.Tensor, np.ndarray]:
    """An SAE's features on the residual stream after block ``layer`` of the testbed model, at the
    valid positions of ``moves``: (codes (N, d_sae), valid bool (n, 60)), rows in the order of
    ``BoardLabels.flat()``. ``sae`` is anything with ``encode(x)``. Costs one forward pass per
    ``batch`` games plus the encoder."""
    from .model import residual_stream

    moves = np.asarray(moves)
    valid = moves >= 0
    res = residual_stream(model, moves, batch=batch)[layer + 1]
    x = res.reshape(-1, res.shape[-1])[torch.from_numpy(valid.reshape(-1))]
    return sae.encode(x), valid
