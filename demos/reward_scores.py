"""The numbers behind the Reward tab, without Gradio: both rewards, the features that decide the
preference, and the rewards after a reweighting.

A SARM reward is linear in the head, ``r = sum_i w_i f_i``, so a reweighting ``w_i -> w'_i`` moves a
score by exactly ``(w'_i - w_i) f_i``: :func:`reweighted` recomputes the scores from features read
once, with no forward and without touching the shared model (the numbers of
``rm.reweight({i: w'_i}, copy=True).score(...)``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from saesteer.demos.limits import DemoInputError

#: how many of the features that decide the preference (``state["deciding"]``) get a weight box
WEIGHT_BOXES = 6


def read_pair(rm: Any, prompt: str, a: str, b: str) -> dict[str, Any]:
    """Score ``(prompt, a)`` and ``(prompt, b)`` and keep what the weight boxes need: both rewards, the
    head, and each response's activation of the features that decide the preference (largest
    ``|w_i (f_a,i - f_b,i)|`` first). Cost: one backbone forward of the two conversations."""
    f = rm.features([(prompt, a), (prompt, b)])                  # [2, d_sae], what the head reads
    w = rm.weight.detach().cpu()
    contrib = f.double() * w.double()                            # exactly as the head sums them
    rewards = contrib.sum(-1)
    margin = contrib[0] - contrib[1]
    shown = [i for i in margin.abs().topk(WEIGHT_BOXES).indices.tolist() if margin[i] != 0]
    top_a = [i for i in contrib[0].abs().topk(WEIGHT_BOXES).indices.tolist() if contrib[0, i] != 0]
    top_b = [i for i in contrib[1].abs().topk(WEIGHT_BOXES).indices.tolist() if contrib[1, i] != 0]
    chart = list(dict.fromkeys(shown + top_a + top_b))
    labels = rm.labels
    return {
        "rewards": rewards.tolist(),
        "deciding": shown,
        "chart": chart,
        "f": {str(i): [float(f[0, i]), float(f[1, i])] for i in chart},
        "w": {str(i): float(w[i]) for i in chart},
        "labels": {str(i): (str(labels[i])[:60] if labels is not None else "") for i in chart},
    }


def reweighted(state: dict[str, Any], weights: dict[int, float]) -> tuple[list[float], dict[str, float]]:
    """Both rewards and the chart's weights after setting ``w_i = weights[i]``. Weights are rounded
    to the head's float32, as ``SARM.reweight`` stores them."""
    w = dict(state["w"])
    r = list(state["rewards"])
    for i, new in weights.items():
        k = str(i)
        new = float(np.float32(new))
        for side in (0, 1):
            r[side] += (new - state["w"][k]) * state["f"][k][side]
        w[k] = new
    return r, w


def typed_weights(state: dict[str, Any], values: Sequence[Any], bound: float) -> dict[int, float]:
    """The head weights typed in the weight boxes, as ``{feature: w'_i}`` for :func:`reweighted`.

    ``values[n]`` is box ``n``'s content (the box of feature ``state["deciding"][n]``). An empty box
    (``None`` or blank: the visitor cleared it to type a new number) and a box still at its shown
    starting value (``w_i`` rounded to 4 decimals) leave that weight unchanged. A weight that is not a
    finite number within ``[-bound, bound]`` is refused with :class:`DemoInputError` naming the box.
    """
    weights: dict[int, float] = {}
    for n, i in enumerate(state["deciding"]):
        v = values[n] if n < len(values) else None
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise DemoInputError(f"the weight of feature {i} must be a number, got {v!r}") from None
        if not math.isfinite(x) or abs(x) > bound:
            raise DemoInputError(f"the weight of feature {i} must be a finite number within "
                                 f"[-{bound:g}, {bound:g}], got {v!r}")
        if abs(x - round(state["w"][str(i)], 4)) > 1e-9:
            weights[i] = x
    return weights


def chart_frame(state: dict[str, Any] | None, w: dict[str, float], side: int) -> pd.DataFrame:
    """One response's bar chart rows: ``w_i f_i`` of each charted feature, coloured by sign, largest
    contribution first (the chart draws its bars in this order)."""
    rows = []
    for k in map(str, state["chart"] if state else []):
        c = w[k] * state["f"][k][side]
        if c != 0:
            rows.append((f"{k}: {state['labels'][k][:28]}", c, "raises the reward" if c > 0 else "lowers the reward"))
    rows.sort(key=lambda r: -r[1])
    names, values, signs = (list(col) for col in zip(*rows)) if rows else ([], [], [])
    return pd.DataFrame({"feature": pd.Series(names, dtype=str), "contribution": pd.Series(values, dtype=float),
                         "effect": pd.Series(signs, dtype=str)})


def shared_y_range(frames: Sequence[pd.DataFrame], pad: float = 0.05) -> list[float] | None:
    """One ``[y_min, y_max]`` for every chart: covers all their contributions and 0, padded by
    ``pad`` of the span, so both responses' bars are drawn on the same scale (None: no bars)."""
    values = [float(v) for f in frames for v in f["contribution"]]
    if not values:
        return None
    lo, hi = min(values + [0.0]), max(values + [0.0])
    span = (hi - lo) or 1.0
    return [lo - pad * span if lo < 0 else 0.0, hi + pad * span if hi > 0 else 0.0]
