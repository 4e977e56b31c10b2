"""The Reward tab: two responses scored by a SARM reward model, each reward split into its feature
contributions ``w_i f_i`` (a bar chart with the features' labels, largest contribution first, both
charts on one y scale), and weight boxes that reweight the features that decide the preference.

The weight boxes recompute the scores from the features read once, with no forward and without
touching the shared model (:mod:`saesteer.demos.reward_scores`). They are ``gr.Number`` boxes with no
bounds of their own, so Gradio passes any content through (an empty box as None) and
:func:`~saesteer.demos.reward_scores.typed_weights` checks it: an empty box leaves its weight
unchanged; any finite weight within ``Limits.max_abs_weight`` is taken (the reward is linear in
``w``, so every finite weight is meaningful); anything else is a message in the tab's error box.

When a request fails, the results it would have replaced (rewards, summary, charts; after a failed
Score also the weight boxes) are cleared, so nothing on screen is left over from an earlier request.
"""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr

from saesteer.demos.limits import DemoInputError, Limits
from saesteer.demos.page_errors import error_html
from saesteer.demos.reward_scores import (WEIGHT_BOXES, chart_frame, read_pair, reweighted, shared_y_range,
                                          typed_weights)

COLORS = {"raises the reward": "#16a34a", "lowers the reward": "#dc2626"}
#: the preloaded pair: (prompt, response A, response B). The demo reward model prefers A, the kind
#: reply, as a person would: r(A) = -1.2329, r(B) = -6.4787 (margin +5.2458; the browser test checks
#: it). The earlier example (a merry quote against the same grim reply at full length) it got wrong.
EXAMPLE = ("Share a thought with me.", "A smile is the best gift you can give a friend.",
           "Another war ... How many comrades have we lost? Death, and more death ...")


class RewardModels:
    """Reward models by path, loaded on first use and kept (at most ``capacity``); ``""`` is the demo
    reward model that ships with saesteer (SmolLM2 + the bundled SAE + a sentiment head)."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, path: str = "") -> Any:
        from saesteer.reward import SARM, load_demo

        path = (path or "").strip()
        if len(path) > 300 or "\n" in path:
            raise DemoInputError("the reward model is a folder on one line (at most 300 characters)")
        with self._lock:
            if path not in self._models:
                rm = load_demo() if not path else SARM.from_pretrained(path)
                while len(self._models) >= self.capacity:
                    self._models.pop(next(iter(self._models)))
                self._models[path] = rm
            return self._models[path]


def checked_texts(limits: Limits, prompt: Any, a: Any, b: Any) -> tuple[str, str, str]:
    """The tab's three texts, stripped and checked, each refusal naming its box: the prompt may be
    empty (a SARM scores a reply alone too), Response A and Response B may not."""
    return (limits.prompt(prompt, "the prompt", required=False), limits.prompt(a, "Response A"),
            limits.prompt(b, "Response B"))


def build_reward_tab(models: RewardModels, limits: Limits) -> None:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events."""
    state = gr.State(None)
    gr.Markdown("A SARM reward model reads SAE features at the last token; its reward is "
                "`sum_i w_i f_i`, so every feature's share is exact. Default: the demo reward model "
                "(SmolLM2 + the bundled SAE + a head trained to prefer positive replies).")
    path = gr.Textbox(label="Reward model folder (empty: the demo reward model)", elem_id="reward-model",
                      max_length=300)
    prompt = gr.Textbox(label="Prompt", value=EXAMPLE[0], elem_id="reward-prompt", max_length=limits.max_prompt_chars)
    with gr.Row():
        resp_a = gr.Textbox(label="Response A", value=EXAMPLE[1], lines=3, elem_id="reward-a-text",
                            max_length=limits.max_prompt_chars)
        resp_b = gr.Textbox(label="Response B", value=EXAMPLE[2], lines=3, elem_id="reward-b-text",
                            max_length=limits.max_prompt_chars)
    score_btn = gr.Button("Score", variant="primary", elem_id="reward-score")
    error = gr.HTML("", elem_id="reward-error")
    with gr.Row():
        score_a = gr.Number(label="Reward A", interactive=False, precision=4, elem_id="reward-a")
        score_b = gr.Number(label="Reward B", interactive=False, precision=4, elem_id="reward-b")
    summary = gr.Markdown("", elem_id="reward-summary")
    charts = []
    with gr.Row():
        for side in "AB":
            charts.append(gr.BarPlot(None, x="feature", y="contribution", color="effect", color_map=COLORS,
                                     sort="-y", title=f"Response {side}: w_i * f_i per feature",
                                     x_label_angle=-40, height=360, elem_id=f"reward-chart-{side.lower()}"))
    gr.Markdown("**Reweight** the features that decide the preference: type a head weight `w_i` (any number "
                f"within ±{limits.max_abs_weight:g}; 0 ignores the feature; an empty box keeps the weight). "
                "Scores update without a forward: the reward is linear in `w`.")
    boxes = []
    with gr.Row():
        for n in range(WEIGHT_BOXES):
            boxes.append(gr.Number(None, step=0.01, label=f"feature {n}", visible=False, elem_id=f"reward-w{n}",
                                   min_width=160))

    def score(p: str, a: str, b: str, folder: str) -> list[Any]:
        try:
            p, a, b = checked_texts(limits, p, a, b)
            st = read_pair(models.get(folder), p, a, b)
            ups = [_box_update(st, n) for n in range(WEIGHT_BOXES)]
            return [st, *st["rewards"], _summary(st["rewards"], st["rewards"]), *_charts(st, st["w"]), "", *ups]
        except Exception as e:  # noqa: BLE001 - shown in the page
            hidden = [gr.update(visible=False, value=None)] * WEIGHT_BOXES
            return [None, None, None, "", *_charts(None, {}), error_html(e), *hidden]

    def reweight(st: dict | None, *values: Any) -> list[Any]:
        if not st:
            return [gr.update()] * 6
        try:
            r, w = reweighted(st, typed_weights(st, values, limits.max_abs_weight))
            return [*r, _summary(st["rewards"], r), *_charts(st, w), ""]
        except Exception as e:  # noqa: BLE001 - shown in the page
            return [None, None, "", *_charts(None, {}), error_html(e)]

    score_btn.click(score, [prompt, resp_a, resp_b, path],
                    [state, score_a, score_b, summary, *charts, error, *boxes])
    for box in boxes:  # user input only (typing): Score's own box updates need no recompute
        box.input(reweight, [state, *boxes], [score_a, score_b, summary, *charts, error], trigger_mode="always_last")


def _charts(st: dict[str, Any] | None, w: dict[str, float]) -> list[Any]:
    """Both charts' updates: each response's rows, both on one y range (empty charts for no state)."""
    if not st:
        return [gr.BarPlot(value=None, y_lim=None)] * 2
    frames = [chart_frame(st, w, 0), chart_frame(st, w, 1)]
    y_lim = shared_y_range(frames)
    return [gr.BarPlot(value=f, y_lim=y_lim) for f in frames]


def _box_update(st: dict[str, Any], n: int) -> Any:
    """Weight box ``n``: the head weight of the ``n``-th feature that decides the preference, or hidden."""
    if n >= len(st["deciding"]):
        return gr.update(visible=False, value=None)
    k = str(st["deciding"][n])
    w = st["w"][k]
    return gr.update(visible=True, value=round(w, 4), label=f"w[{k}] (was {w:+.4f}) {st['labels'][k][:24]}")


def _summary(original: list[float], now: list[float]) -> str:
    pref = "A" if now[0] > now[1] else "B" if now[1] > now[0] else "neither"
    text = f"**{pref}** preferred, margin r(A) - r(B) = {now[0] - now[1]:+.4f}"
    if now != original:
        text += f" (before reweighting: A {original[0]:+.4f}, B {original[1]:+.4f})"
    return text
