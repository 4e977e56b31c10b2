"""FMS, the Feature Monosemanticity Score of G-SAE (Härle et al. 2025), with the small decision trees it
is defined by (REFERENCE.md "Metrics"):

- ``A0``: the accuracy of the best single-feature depth-1 tree (a stump) on a labelled concept;
- local = ``clip(2 (A0 - A_p), 0, 1)``, ``A_p`` the best stump's accuracy once that feature is removed;
- global = ``clip(1 - mean_i (A_i - A0), 0, 1)`` over trees of depth ``i = 1..n``;
- ``FMS = A0 (local + global) / 2``.

saesteer's reading (the paper's code was not found, SEED_METHODS.md section 11): trees are greedy
accuracy-maximising CART trees, a leaf predicts its majority class, accuracies are in-sample, and the
deeper trees choose among the ``candidates`` features with the best stumps (all features for ``A0`` and
``A_p``). Cost: one sort of every feature's column (``[N, F]``), then ``2^depth`` sorts of the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def stump_accuracies(a: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For every column of ``a [N, F]`` and binary ``y [N]``: the best stump's accuracy and threshold
    (predict by majority on each side of ``a > t``); ``([F], [F])``. Ties never straddle a split."""
    N = a.shape[0]
    vals, order = torch.sort(a.double(), dim=0)
    ys = y.double()[order]  # [N, F], labels in each column's sorted order
    cp = torch.cat([torch.zeros(1, a.shape[1], dtype=torch.float64), ys.cumsum(0)])  # positives left of split i
    P = cp[-1:]
    i = torch.arange(N + 1, dtype=torch.float64).unsqueeze(1)
    left = torch.maximum(cp, i - cp)
    right = torch.maximum(P - cp, (N - i) - (P - cp))
    acc = (left + right) / N  # [N+1, F]: split after i sorted rows
    ok = torch.ones_like(acc, dtype=torch.bool)
    ok[1:N] = vals[1:] > vals[:-1]  # only between distinct values (i = 0 and N: no split)
    acc = torch.where(ok, acc, torch.zeros_like(acc))
    best, at = acc.max(0)
    lo = vals.gather(0, (at - 1).clamp(0, N - 1).unsqueeze(0)).squeeze(0)
    hi = vals.gather(0, at.clamp(0, N - 1).unsqueeze(0)).squeeze(0)
    thr = torch.where(at == 0, vals[0] - 1, torch.where(at == N, vals[-1], (lo + hi) / 2))
    return best, thr


def tree_accuracy(a: torch.Tensor, y: torch.Tensor, depth: int) -> float:
    """In-sample accuracy of a greedy depth-``depth`` tree on ``a [N, F]``: each node takes the stump of
    best accuracy on its rows, a node whose split gains nothing becomes a leaf."""
    def grow(rows: torch.Tensor, d: int) -> int:  # correct predictions on ``rows``
        yr = y[rows]
        pos = int(yr.sum())
        leaf = max(pos, len(rows) - pos)
        if d == 0 or pos in (0, len(rows)):
            return leaf
        acc, thr = stump_accuracies(a[rows], yr)
        j = int(acc.argmax())
        if float(acc[j]) * len(rows) <= leaf + 1e-9:
            return leaf
        go = a[rows, j] > thr[j]
        return grow(rows[go], d - 1) + grow(rows[~go], d - 1)

    return grow(torch.arange(a.shape[0]), depth) / a.shape[0]


@dataclass(frozen=True)
class FMS:
    """One concept's score and its parts; ``feature`` is the column of the best stump."""

    fms: float
    a0: float
    local: float
    global_: float
    feature: int
    tree_accuracies: tuple[float, ...]


def fms(a: torch.Tensor, y: torch.Tensor, depth: int = 3, candidates: int = 64) -> FMS:
    """FMS of features ``a [N, F]`` for binary concept ``y [N]`` (see the module doc)."""
    y = y.long()
    acc, _ = stump_accuracies(a, y)
    j = int(acc.argmax())
    a0 = float(acc[j])
    rest = acc.clone()
    rest[j] = -1.0
    a_p = float(rest.max()) if a.shape[1] > 1 else max(float(y.double().mean()), 1 - float(y.double().mean()))
    local = min(max(2 * (a0 - a_p), 0.0), 1.0)
    top = acc.topk(min(candidates, a.shape[1])).indices
    trees = tuple(tree_accuracy(a[:, top], y, i) for i in range(1, depth + 1))
    glob = min(max(1 - sum(t - a0 for t in trees) / len(trees), 0.0), 1.0)
    return FMS(a0 * (local + glob) / 2, a0, local, glob, j, trees)
