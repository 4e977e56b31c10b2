"""The Steer tab: a prompt, a list of feature edits, the unsteered and the steered continuation side by
side from one batched forward (streamed as tokens arrive), and which feature fires on which token.

The edit list lives in the visitor's own ``gr.State``; it reaches the model only as the ``edits=``
argument of that visitor's call, so two visitors steering at once never see each other's edits.

When a request fails, the results it would have replaced are cleared (a failed Generate clears both
continuations and both token views; a failed search, the matches; a failed Auto strength, the curve), so
nothing on screen is left over from an earlier request. Auto strength runs a small steering sweep of the
chosen feature (:mod:`saesteer.demos.auto_strength`), fills in the kind and value it chose and shows
the sweep's curve. The edit list is the visitor's input, not a result: a refused edit leaves it
as it was.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import gradio as gr

from saesteer.demos.auto_strength import auto_strength
from saesteer.demos.limits import KINDS, DemoInputError, Limits
from saesteer.demos.models import ModelRegistry, PairKey
from saesteer.demos.page_errors import error_html
from saesteer.demos.streaming import chat_text, stream_rows
from saesteer.demos.token_view import TokenFeatures, read_token_features, render_tokens, shared_scale

EDIT_HEADERS = ["feature", "kind", "value", "label"]
EXAMPLE_PROMPT = "Tell me about the sea."


def build_steer_tab(registry: ModelRegistry, limits: Limits, pair_state: gr.State) -> dict[str, Any]:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events. Returns the components
    other parts of the page touch (the edit list, reset when another pair is loaded)."""
    edits_state = gr.State([])
    view_state = gr.State(None)
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPT, lines=2, max_length=limits.max_prompt_chars,
                            elem_id="steer-prompt", scale=4)
        with gr.Column(scale=1, min_width=200):
            max_new = gr.Slider(1, limits.max_new_tokens, value=min(40, limits.max_new_tokens), step=1,
                                label="Max new tokens", elem_id="steer-max-new")
            chat = gr.Checkbox(value=True, label="Chat template", elem_id="steer-chat")
    with gr.Accordion("Find a feature by its label", open=True):
        with gr.Row():
            query = gr.Textbox(label="Search labels", placeholder="e.g. kjv, shakespeare, python def",
                               max_length=limits.max_search_chars, elem_id="steer-search", scale=4)
            search_btn = gr.Button("Search", elem_id="steer-search-btn", scale=1)
        results = gr.Dataframe(headers=["feature", "label (or explanation [scores])"], datatype=["number", "str"], interactive=False,
                               label="Matches (click one to edit it)", max_height=220, elem_id="steer-results")
    with gr.Row(equal_height=True):
        feature = gr.Number(label="Feature", precision=0, elem_id="steer-feature")
        kind = gr.Radio(list(KINDS), value="clamp", label="Edit", elem_id="steer-kind")
        value = gr.Number(label="Value (clamp/add: activation, scale: factor)", value=80.0, elem_id="steer-value")
        with gr.Column(min_width=120):
            auto_btn = gr.Button("Auto strength", elem_id="steer-auto", variant="secondary")
            add_btn = gr.Button("Add edit", elem_id="steer-add")
            clear_btn = gr.Button("Clear edits", elem_id="steer-clear", variant="secondary")
    auto_curve = gr.HTML("", elem_id="steer-auto-curve")
    edits_table = gr.Dataframe(headers=EDIT_HEADERS, interactive=False, label="Edits (applied to the steered side)",
                               elem_id="steer-edits", value=[])
    generate_btn = gr.Button("Generate", variant="primary", elem_id="steer-generate")
    error = gr.HTML("", elem_id="steer-error")
    status = gr.Markdown("", elem_id="steer-status")
    with gr.Row():
        unsteered = gr.Textbox(label="Unsteered", lines=6, interactive=False, elem_id="steer-unsteered")
        steered = gr.Textbox(label="Steered", lines=6, interactive=False, elem_id="steer-steered")
    gr.Markdown("**Which feature fires where** (read by the unsteered model on each output; "
                "hover a token for its top features)")
    highlight = gr.Textbox(label="Highlight feature", placeholder="empty: each token's strongest feature",
                           max_length=12, elem_id="steer-highlight")
    with gr.Row():
        view_u = gr.HTML("", label="Unsteered tokens", show_label=True, container=True,
                         elem_id="steer-view-unsteered")
        view_s = gr.HTML("", label="Steered tokens", show_label=True, container=True,
                         elem_id="steer-view-steered")

    def search(q: str, key: PairKey) -> tuple[Any, str]:
        try:
            pair = registry.get(key)
            q = (q or "").strip()[: limits.max_search_chars]
            labels = pair.sae.labels
            if labels is None:
                return [], error_html(DemoInputError(
                    "this SAE has no feature labels (feature_labels.json.gz beside it); type a feature number"))
            return [[m.feature, labels.describe(m.feature)] for m in labels.search(q, top=20)], ""
        except Exception as e:  # noqa: BLE001 - shown in the page
            return [], error_html(e)

    def pick(rows: Any, evt: gr.SelectData) -> Any:
        row = evt.row_value if evt.row_value is not None else _row(rows, evt.index[0])
        return int(row[0]) if row else gr.update()

    def add(f: Any, k: str, v: Any, rows: list, key: PairKey) -> tuple[list, list, str]:
        try:
            pair = registry.get(key)
            if len(rows) >= limits.max_edits:
                raise DemoInputError(f"at most {limits.max_edits} edits; clear them first")
            new = rows + [list(limits.edit_row(f, k, v, d_sae=pair.sae.d_sae))]
            return new, _table(new, pair.sae.labels), ""
        except Exception as e:  # noqa: BLE001
            return rows, gr.update(), error_html(e)

    def clear() -> tuple[list, list, str]:
        return [], [], ""

    def auto(f: Any, use_chat: bool, key: PairKey) -> tuple[Any, Any, str, str]:
        """A small steering sweep of the feature: fills in the kind and value it chose, shows the curve."""
        try:
            res = auto_strength(registry.get(key), f, bool(use_chat), limits)
            if res.value is None:  # the sweep ran; nothing fit the budget: the curve says why
                return gr.update(), gr.update(), res.curve, error_html(DemoInputError(res.note))
            return res.kind, res.value, res.curve, ""
        except Exception as e:  # noqa: BLE001
            return gr.update(), gr.update(), "", error_html(e)

    def generate(text: str, n_new: Any, use_chat: bool, rows: list, hl: Any, key: PairKey) -> Iterator[dict]:
        try:
            text = limits.prompt(text)
            n = limits.new_tokens(n_new)
            pair = registry.get(key)
            edits = limits.edit_list(rows, pair.sae.d_sae)
            full = chat_text(pair.tokenizer, text, bool(use_chat))
            limits.prompt_tokens(len(pair.tokenizer(full)["input_ids"]))
            shown = _highlight(hl, rows)
            yield {error: "", status: "generating...", unsteered: "", steered: "", view_u: "", view_s: ""}
            t0 = time.perf_counter()
            last = None
            for last in stream_rows(pair.model, pair.tokenizer, full, [None, edits or None], max_new_tokens=n):
                if not last.done:
                    yield {unsteered: last.texts[0], steered: last.texts[1],
                           status: f"generating... {last.new_tokens} tokens"}
            dt = time.perf_counter() - t0
            assert last is not None and last.done
            views = read_token_features(pair.model, pair.tokenizer, last.sequences, last.attention_mask,
                                        last.prompt_len)
            html_u, html_s = _render(views, shown, pair.sae.labels)
            yield {unsteered: last.texts[0], steered: last.texts[1], view_state: [v.to_json() for v in views],
                   view_u: html_u, view_s: html_s, highlight: "" if shown is None else str(shown),
                   status: f"done: {last.new_tokens} new tokens per side in {dt:.1f} s "
                           f"({len(edits)} edit{'s' * (len(edits) != 1)}; both sides in one batched forward)"}
        except Exception as e:  # noqa: BLE001
            yield {error: error_html(e), status: "stopped by an error", unsteered: "", steered: "", view_u: "",
                   view_s: "", view_state: None}

    def rehighlight(hl: Any, views: Any, key: PairKey) -> tuple[str, str, str]:
        if not views:
            return gr.update(), gr.update(), gr.update()
        try:
            pair = registry.get(key)
            html_u, html_s = _render([TokenFeatures.from_json(v) for v in views], _highlight(hl, []), pair.sae.labels)
            return html_u, html_s, ""
        except Exception as e:  # noqa: BLE001
            return "", "", error_html(e)

    search_btn.click(search, [query, pair_state], [results, error])
    query.submit(search, [query, pair_state], [results, error])
    results.select(pick, [results], [feature])
    add_btn.click(add, [feature, kind, value, edits_state, pair_state], [edits_state, edits_table, error])
    clear_btn.click(clear, None, [edits_state, edits_table, error])
    auto_btn.click(auto, [feature, chat, pair_state], [kind, value, auto_curve, error])
    generate_btn.click(generate, [prompt, max_new, chat, edits_state, highlight, pair_state],
                       [error, status, unsteered, steered, view_u, view_s, view_state, highlight])
    highlight.submit(rehighlight, [highlight, view_state, pair_state], [view_u, view_s, error])
    highlight.blur(rehighlight, [highlight, view_state, pair_state], [view_u, view_s, error])
    return {"edits_state": edits_state, "edits_table": edits_table}


def _highlight(hl: Any, rows: list) -> int | None:
    """The feature to highlight: the one typed, else the first edited feature, else None."""
    hl = "" if hl is None else str(hl).strip()
    if hl:
        if not hl.isdigit():
            raise DemoInputError(f"the feature to highlight is a whole number, got {hl!r}")
        return int(hl)
    return int(rows[0][0]) if rows else None


def _render(views: list[TokenFeatures], feature: int | None, labels: Any) -> tuple[str, str]:
    scale = shared_scale(views, feature)
    return tuple(render_tokens(v, feature, labels, scale) for v in views)  # type: ignore[return-value]


def _table(rows: list, labels: Any) -> list[list[Any]]:
    return [[f, k, v if k != "erase" else "", (labels.get(f, "") if labels is not None else "")[:80]]
            for f, k, v in rows]


def _row(rows: Any, i: int) -> list | None:
    data = rows.values.tolist() if hasattr(rows, "values") else rows
    return data[i] if data and 0 <= i < len(data) else None
