"""The numbers behind the Reward tab, without Gradio: both rewards, the features that decide the
preference, and the rewards after a reweighting.

A SARM reward is linear in the head, ``r = sum_i w_i f_i``, so a reweighting ``w_i -> w'_i`` moves a
score by exactly ``(w'_i - w_i) f_i``: :func:`reweighted` recomputes the scores from features read
once, with no forward and without touching the shared model (the numbers of
``rm.reweight({i: w'_i}, copy=True).score(...)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: how many of the features that decide the preference get a slider
SLIDERS = 6


def read_pair(rm: Any, prompt: str, a: str, b: str) -> dict[str, Any]:
    """Score ``(prompt, a)`` and ``(prompt, b)`` and keep what the sliders need: both rewards, the
    head, and each response's activation of the features that decide the preference (largest
    ``|w_i (f_a,i - f_b,i)|`` first). Cost: one backbone forward of the two conversations."""
    f = rm.features([(prompt, a), (prompt, b)])                  # [2, d_sae], what the head reads
    w = rm.weight.detach().cpu()
    contrib = f.double() * w.double()                            # exactly as the head sums them
    rewards = contrib.sum(-1)
    margin = contrib[0] - contrib[1]
    shown = [i for i in margin.abs().topk(SLIDERS).indices.tolist() if margin[i] != 0]
    top_a = [i for i in contrib[0].abs().topk(SLIDERS).indices.tolist() if contrib[0, i] != 0]
    top_b = [i for i in contrib[1].abs().topk(SLIDERS).indices.tolist() if contrib[1, i] != 0]
    chart = list(dict.fromkeys(shown + top_a + top_b))
    labels = rm.labels
    return {
        "rewards": rewards.tolist(),
        "sliders": shown,
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


def chart_frame(state: dict[str, Any] | None, w: dict[str, float], side: int) -> pd.DataFrame:
    """One response's bar chart rows: ``w_i f_i`` of each charted feature, coloured by sign."""
    names, values, signs = [], [], []
    for k in map(str, state["chart"] if state else []):
        c = w[k] * state["f"][k][side]
        if c == 0:
            continue
        names.append(f"{k}: {state['labels'][k][:28]}")
        values.append(c)
        signs.append("raises the reward" if c > 0 else "lowers the reward")
    return pd.DataFrame({"feature": pd.Series(names, dtype=str), "contribution": pd.Series(values, dtype=float),
                         "effect": pd.Series(signs, dtype=str)})
