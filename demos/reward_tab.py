"""The Reward tab: two responses scored by a SARM reward model, each reward split into its feature
contributions ``w_i f_i`` (a bar chart with the features' labels), and sliders that reweight the
features that decide the preference.

The sliders recompute the scores from the features read once, with no forward and without touching
the shared model (:mod:`saesteer.demos.reward_scores`).
"""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr

from saesteer.demos.limits import DemoInputError, Limits
from saesteer.demos.page_errors import error_html
from saesteer.demos.reward_scores import SLIDERS, chart_frame, read_pair, reweighted

COLORS = {"raises the reward": "#16a34a", "lowers the reward": "#dc2626"}
EXAMPLE = ("What's on your mind?", '"Eat, drink, and be merry, for tomorrow you may work."',
           "Another war ... must it always be so? How many comrades have we lost in this way? ... "
           "Obedience. Duty. Death, and more death ...")


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
            charts.append(gr.BarPlot(None, x="feature", y="contribution", color="effect",
                                     color_map=COLORS, title=f"Response {side}: w_i * f_i per feature",
                                     x_label_angle=-40, height=360, elem_id=f"reward-chart-{side.lower()}"))
    gr.Markdown("**Reweight** the features that decide the preference (the head weight `w_i`; 0 ignores "
                "the feature). Scores update without a forward: the reward is linear in `w`.")
    sliders = []
    with gr.Row():
        for n in range(SLIDERS):
            sliders.append(gr.Slider(-1.0, 1.0, value=0.0, step=0.0001, label=f"feature {n}", visible=False,
                                     elem_id=f"reward-w{n}", min_width=160))

    def score(p: str, a: str, b: str, folder: str) -> list[Any]:
        try:
            p = (p or "").strip()
            a, b = limits.prompt(a), limits.prompt(b)
            if len(p) > limits.max_prompt_chars:
                raise DemoInputError(f"the prompt has {len(p)} characters; at most {limits.max_prompt_chars}")
            st = read_pair(models.get(folder), p, a, b)
            ups = [_slider_update(st, n) for n in range(SLIDERS)]
            return [st, *st["rewards"], _summary(st["rewards"], st["rewards"]), chart_frame(st, st["w"], 0),
                    chart_frame(st, st["w"], 1), "", *ups]
        except Exception as e:  # noqa: BLE001 - shown in the page
            return [gr.update()] * 6 + [error_html(e)] + [gr.update()] * SLIDERS

    def reweight(st: dict | None, *values: float) -> list[Any]:
        if not st:
            return [gr.update()] * 5
        # a slider still at its shown starting value (w_i rounded to the slider's step) is unchanged
        weights = {i: values[n] for n, i in enumerate(st["sliders"])
                   if values[n] is not None and abs(values[n] - round(st["w"][str(i)], 4)) > 1e-9}
        r, w = reweighted(st, weights)
        return [*r, _summary(st["rewards"], r), chart_frame(st, w, 0), chart_frame(st, w, 1)]

    score_btn.click(score, [prompt, resp_a, resp_b, path],
                    [state, score_a, score_b, summary, *charts, error, *sliders])
    for s in sliders:  # user input only (typing, dragging): Score's own slider updates need no recompute
        s.input(reweight, [state, *sliders], [score_a, score_b, summary, *charts], trigger_mode="always_last")


def _slider_update(st: dict[str, Any], n: int) -> Any:
    if n >= len(st["sliders"]):
        return gr.update(visible=False)
    k = str(st["sliders"][n])
    w = st["w"][k]
    bound = max(1.0, 2 * abs(w))
    return gr.update(visible=True, value=round(w, 4), minimum=-bound, maximum=bound,
                     label=f"w[{k}] (was {w:+.4f}) {st['labels'][k][:24]}")


def _summary(original: list[float], now: list[float]) -> str:
    pref = "A" if now[0] > now[1] else "B" if now[1] > now[0] else "neither"
    text = f"**{pref}** preferred, margin r(A) - r(B) = {now[0] - now[1]:+.4f}"
    if now != original:
        text += f" (before reweighting: A {original[0]:+.4f}, B {original[1]:+.4f})"
    return text
