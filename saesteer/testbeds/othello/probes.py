"""Linear probes for the board on the testbed model's residual stream, one per layer.

A probe is one linear map ``d_model -> 64 x C`` (a softmax over the C classes of every square),
trained with cross-entropy on the positions of training games and scored on held-out games by
accuracy: the fraction of (position, square) pairs whose argmax class is the true class. Probing
``labels.mine_theirs`` is the classic OthelloGPT finding (Nanda et al.): the board is linearly
decodable in mine/theirs terms from the middle layers on. A majority-class baseline (the most
frequent class of each square on the training positions) is reported beside it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .labels import BoardLabels, mine_theirs
from .model import residual_stream


def _flat_resid(model, moves: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    res = residual_stream(model, moves)  # (L+1, n, 60, d)
    L1, n, T, d = res.shape
    return res.reshape(L1, n * T, d)[:, torch.from_numpy(valid.reshape(-1))]


def fit_probe(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, epochs: int = 6, batch: int = 512, lr: float = 1e-2, seed: int = 0
) -> torch.nn.Linear:
    """Fit a linear probe: ``x`` float (N, d), ``y`` long (N, 64) class per square. Adam over
    minibatches, seeded. Costs ``epochs * N * d * 64 * C * 6`` flops (a few seconds for 100k
    positions at d = 128 on one core)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], 64 * n_classes)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            logits = probe((x[idx] - mu) / sd).view(-1, 64, n_classes)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, n_classes), y[idx].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():  # fold the standardisation into the probe
        w = probe.weight / sd
        probe.bias -= w @ mu
        probe.weight.copy_(w)
    return probe


@torch.no_grad()
def probe_accuracy(probe: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> float:
    """Fraction of (position, square) entries where the probe's argmax class equals ``y``."""
    pred = probe(x).view(-1, 64, n_classes).argmax(-1)
    return float((pred == y).float().mean())


def probe_layers(
    model,
    train_moves: np.ndarray,
    test_moves: np.ndarray,
    labels_fn: Callable[[np.ndarray], BoardLabels] = mine_theirs,
    epochs: int = 6,
    seed: int = 0,
) -> dict:
    """Train one probe per residual layer (0 = embeddings, l = after block l) on ``train_moves``'
    positions and score it on ``test_moves``'. Returns ``{"accuracy": [per layer], "baseline":
    majority-class accuracy, "classes": ..., "n_train": positions, "n_test": positions}``. Costs
    two residual-stream passes plus one `fit_probe` per layer."""
    tr, te = labels_fn(train_moves), labels_fn(test_moves)
    ytr = torch.from_numpy(tr.flat().argmax(-1))
    yte = torch.from_numpy(te.flat().argmax(-1))
    C = tr.values.shape[-1]
    xtr, xte = _flat_resid(model, train_moves, tr.valid), _flat_resid(model, test_moves, te.valid)
    acc = []
    for layer in range(xtr.shape[0]):
        probe = fit_probe(xtr[layer], ytr, C, epochs=epochs, seed=seed)
        acc.append(probe_accuracy(probe, xte[layer], yte, C))
    majority = torch.from_numpy(tr.flat().sum(0).argmax(-1))  # (64,)
    baseline = float((yte == majority[None]).float().mean())
    return {"accuracy": acc, "baseline": baseline, "classes": tr.classes, "n_train": len(ytr), "n_test": len(yte)}
