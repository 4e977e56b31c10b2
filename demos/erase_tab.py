"""The Erase tab: FeatureEdit. State the knowledge to erase (and some to keep), see the SAE features
chosen to carry it, and probe the model before and after erasing them (``f_i = 0``, SAE error kept).

The chosen edit lives in the visitor's ``gr.State`` detached from the model (Gradio copies state
values) and is bound again (``FeatureEdit.bind``, which checks that the model and SAE are the ones it
was found on) each time it is used.

When a request fails, the results it would have replaced are cleared (a failed Find clears the chosen
features, the probed statements, the summary and the probe's before/after, which belonged to the
previous features; a failed probe, its before/after), so nothing on screen is left over from an
earlier request.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr

from saesteer.demos.limits import DemoInputError, Limits
from saesteer.demos.models import ModelRegistry, PairKey
from saesteer.demos.page_errors import error_html
from saesteer.demos.streaming import stream_rows

METHODS = ("attribution", "activation")
MAX_STATEMENTS = 8
MAX_STATEMENT_CHARS = 300
MAX_UNITS = 32
PROBE_TOKENS = 12
#: the page's starting choice: on the example, 32 features by activation contrast erase more of the
#: target and keep more of the rest than attribution's 16 (see the summary line the tab prints)
DEFAULT_TOP, DEFAULT_METHOD = 32, "activation"
EXAMPLE_TARGET = ("The capital of France is Paris.\nThe currency of France is the euro.\n"
                  "The official language of France is French.")
EXAMPLE_KEEP = ("The capital of Germany is Berlin.\nThe capital of Japan is Tokyo.\n"
                "The official language of Spain is Spanish.")
EXAMPLE_PROBE = "The capital of France is"


def statements(text: Any, what: str) -> list[str]:
    """The non-empty lines of a box, within the tab's bounds."""
    lines = [s.strip() for s in str(text or "").splitlines() if s.strip()]
    if not lines:
        raise DemoInputError(f"{what}: give at least one statement, one per line (its last word is the answer)")
    if len(lines) > MAX_STATEMENTS:
        raise DemoInputError(f"{what}: at most {MAX_STATEMENTS} statements, got {len(lines)}")
    long = [s for s in lines if len(s) > MAX_STATEMENT_CHARS]
    if long:
        raise DemoInputError(f"{what}: a statement has {len(long[0])} characters; at most {MAX_STATEMENT_CHARS}")
    return lines


def build_erase_tab(registry: ModelRegistry, limits: Limits, pair_state: gr.State) -> None:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events."""
    from saesteer.featureedit import FeatureEdit

    found = gr.State(None)
    gr.Markdown("**FeatureEdit**: the features that separate the statements to erase from those to keep "
                "(attribution: their effect on the answer; activation: how much more they fire) are erased "
                "(`f_i = 0` at every token, the SAE error kept). Each statement's last word is its answer.")
    with gr.Row():
        target = gr.Textbox(label="Knowledge to erase (one statement per line)", value=EXAMPLE_TARGET, lines=4,
                            elem_id="erase-target", max_length=MAX_STATEMENTS * (MAX_STATEMENT_CHARS + 1))
        keep = gr.Textbox(label="Knowledge to keep (one statement per line)", value=EXAMPLE_KEEP, lines=4,
                          elem_id="erase-keep", max_length=MAX_STATEMENTS * (MAX_STATEMENT_CHARS + 1))
    with gr.Row():
        top = gr.Slider(1, MAX_UNITS, value=DEFAULT_TOP, step=1, label="Features to erase", elem_id="erase-top")
        method = gr.Radio(list(METHODS), value=DEFAULT_METHOD, label="Selection", elem_id="erase-method")
    find_btn = gr.Button("Find features", variant="primary", elem_id="erase-find")
    error = gr.HTML("", elem_id="erase-error")
    table = gr.Dataframe(headers=["feature", "score", "on erased", "on kept", "label"], interactive=False,
                         label="Chosen features (best first)", max_height=300, elem_id="erase-features")
    with gr.Row():
        probe = gr.Textbox(label="Probe (the model completes it; no chat template)", value=EXAMPLE_PROBE,
                           elem_id="erase-probe-prompt", max_length=limits.max_prompt_chars, scale=4)
        probe_btn = gr.Button("Probe before / after", elem_id="erase-probe", scale=1)
    with gr.Row():
        before = gr.Textbox(label="Before", interactive=False, elem_id="erase-before")
        after = gr.Textbox(label="After erasing", interactive=False, elem_id="erase-after")
    facts = gr.Dataframe(headers=["statement", "group", "P(answer) before", "after"], interactive=False,
                         label="The statements, probed", elem_id="erase-facts")
    summary = gr.Markdown("", elem_id="erase-summary")

    def find(t: str, k: str, n: Any, m: str, key: PairKey) -> list[Any]:
        try:
            pair = registry.get(key)
            if m not in METHODS:
                raise DemoInputError(f"selection is one of {', '.join(METHODS)}")
            n = int(n)
            if not 1 <= n <= MAX_UNITS:
                raise DemoInputError(f"erase between 1 and {MAX_UNITS} features")
            edit = FeatureEdit.find(pair.model, target=statements(t, "knowledge to erase"),
                                    contrast=statements(k, "knowledge to keep"), top=n, method=m,
                                    tokenizer=pair.tokenizer)
            rows = [[u.feature, round(u.score, 4), round(u.target, 4), round(u.contrast, 4), u.label[:80]]
                    for u in edit.features]
            report = edit.evaluate(verbose=False)
            return [dataclasses.replace(edit, model=None), rows, _fact_rows(report), _summary(report), "", "", ""]
        except Exception as e:  # noqa: BLE001 - shown in the page
            return [None, [], [], "", "", "", error_html(e)]

    def run_probe(text: str, stored: Any, key: PairKey) -> list[Any]:
        try:
            if stored is None:
                raise DemoInputError("find the features first")
            pair = registry.get(key)
            edit = stored.bind(pair.model)  # refuses when this session now uses another model or SAE
            text = limits.prompt(text, "the probe")
            last = None
            for last in stream_rows(pair.model, pair.tokenizer, text, [None, edit], max_new_tokens=PROBE_TOKENS):
                pass
            return [last.texts[0], last.texts[1], ""]
        except Exception as e:  # noqa: BLE001
            return ["", "", error_html(e)]

    find_btn.click(find, [target, keep, top, method, pair_state], [found, table, facts, summary, before, after, error])
    probe_btn.click(run_probe, [probe, found, pair_state], [before, after, error])


def _fact_rows(report: Any) -> list[list[Any]]:
    rows = []
    for name, g in report.groups.items():
        group = "erased" if name == "target" else "kept" if name == "contrast" else name
        for f, p0, p1 in zip(g.facts, g.p0, g.p1):
            rows.append([f"{f.prompt} [{f.answer.strip()}]", group, round(p0, 4), round(p1, 4)])
    return rows


def _summary(report: Any) -> str:
    parts = []
    if report.reliability is not None:
        g = report.groups["target"]
        parts.append(f"reliability {report.reliability:.3f} (P(answer) of the erased statements "
                     f"{g.mean_p0:.3f} -> {g.mean_p1:.3f})")
    if report.locality_contrast is not None:
        g = report.groups["contrast"]
        parts.append(f"locality {report.locality_contrast:.3f} (kept statements {g.mean_p0:.3f} -> {g.mean_p1:.3f})")
    return "; ".join(parts)
