"""The Vision tab: the shipped tiny LLaVA (a 4-layer CLIP tower, a projector, SmolLM2-135M-Instruct) and
its vision SAE. Pick a gallery image or upload one, find a feature by its label (the kind of object its
top training images show), clamp it at every image token, and read the one-word answer to ``QUESTION``
without and with the clamp, side by side, from one batched ``generate`` of the same SteeredModel. The
chosen feature's top gallery images and its activation over the current image's patches are shown too.

The model loads on first use (about 5 s); the gallery's activations are read once per process.

When a request fails, the results it would have replaced are cleared (a failed Answer clears both
answers, the top-images strip and the heat map; a failed search, the matches), so nothing on screen is
left over from an earlier request.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import gradio as gr

from saesteer.demos.limits import Limits
from saesteer.demos.page_errors import error_html
from saesteer.demos.vision_images import checked_upload, open_gallery_image
from saesteer.demos.vision_model import (ANSWER_TOKENS, VisionModels, answer_pair, default_clamp, feature_pictures,
                                         search_features)

SEARCH_HEADERS = ["feature", "label", "purity", "top images", "MS", "max act.", "names"]
EXAMPLE_SEARCH = "bird"


def build_vision_tab(models: VisionModels, limits: Limits) -> None:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events."""
    from saesteer.embedded.vlm import QUESTION

    chosen = gr.State(None)  # a gallery index, or None: the image box holds the visitor's upload
    gr.Markdown(f"A tiny LLaVA answers *{QUESTION}* about an image. An SAE on the vision-tower layer the "
                "LLaVA reads has features labelled by the kind of object their top training images show "
                "(purity: that kind's share of them). Clamp one at every token of that layer and compare the "
                "answers without and with it.")
    with gr.Row():
        with gr.Column(scale=3):
            thumbs = gr.Gallery([(str(r["path"]), _caption(r)) for r in models.gallery], columns=6, height=300,
                                allow_preview=False, label="Gallery (click one; 'held out': never seen in training)",
                                elem_id="vision-gallery")
        with gr.Column(scale=2):
            image = gr.Image(type="pil", image_mode=None, sources=["upload", "clipboard"], format="png", height=260,
                             label="Image (from the gallery, or upload your own)", elem_id="vision-image")
            chosen_md = gr.Markdown("no image yet", elem_id="vision-chosen")
    with gr.Row():
        query = gr.Textbox(label="Search feature labels", value=EXAMPLE_SEARCH, max_length=limits.max_search_chars,
                           placeholder="e.g. bird, fruit, vehicle, a stamp's name, or a feature number",
                           elem_id="vision-search", scale=4)
        search_btn = gr.Button("Search", elem_id="vision-search-btn", scale=1)
    results = gr.Dataframe(headers=SEARCH_HEADERS, interactive=False, max_height=220, elem_id="vision-results",
                           label="Matches (click one to clamp it)")
    with gr.Row(equal_height=True):
        feature = gr.Number(label="Feature", precision=0, elem_id="vision-feature")
        value = gr.Textbox(label="Clamp value (empty: the feature's max activation x the factor the build's "
                                 "steering screen chose for it, else x 2)", max_length=40,
                           elem_id="vision-value")
        run_btn = gr.Button("Answer", variant="primary", elem_id="vision-run")
    error = gr.HTML("", elem_id="vision-error")
    status = gr.Markdown("", elem_id="vision-status")
    with gr.Row():
        plain = gr.Textbox(label="Unsteered answer", interactive=False, elem_id="vision-unsteered")
        steered = gr.Textbox(label="Steered answer", interactive=False, elem_id="vision-steered")
    with gr.Row():
        with gr.Column(scale=2):
            heat = gr.Image(type="numpy", format="png", interactive=False, height=460,
                            label="Where the feature fires in this image", elem_id="vision-heatmap")
            heat_md = gr.Markdown("", elem_id="vision-heat-caption")
        with gr.Column(scale=3):
            strip = gr.Gallery(columns=3, height=520, allow_preview=False, interactive=False, fit_columns=False,
                               label="The feature's top gallery images: max activation over the patches | image",
                               elem_id="vision-top")

    def pick_image(evt: gr.SelectData) -> tuple[Any, Any, str]:
        i = int(evt.index if not isinstance(evt.index, (list, tuple)) else evt.index[0])
        if not 0 <= i < len(models.gallery):
            return gr.update(), gr.update(), "no such gallery image"
        return i, open_gallery_image(models.gallery[i]), f"gallery image {i}: {_caption(models.gallery[i])}"

    def uploaded() -> tuple[None, str]:
        return None, "your upload"

    def search(q: Any) -> tuple[Any, str]:
        try:
            return search_features(models.get().labels, str(q or "")[: limits.max_search_chars]), ""
        except Exception as e:  # noqa: BLE001 - shown in the page
            return [], error_html(e)

    def pick_feature(rows: Any, evt: gr.SelectData) -> tuple[Any, Any]:
        row = evt.row_value if evt.row_value is not None else _row(rows, evt.index[0])
        if not row:
            return gr.update(), gr.update()
        f = int(row[0])
        v = models.get()
        return f, str(default_clamp(v.labels, f, v.factors))

    def run(idx: Any, img: Any, f: Any, val: Any) -> Iterator[dict]:
        try:
            yield {error: "", plain: "", steered: "", strip: [], heat: None, heat_md: "",
                   status: "answering..." if models.loaded else "loading the model (once), then answering..."}
            v = models.get()
            picture = open_gallery_image(v.gallery[int(idx)]) if idx is not None else checked_upload(img)
            if val is None or not str(val).strip():
                f0, _, _ = limits.edit_row(f, "clamp", 0.0, d_sae=v.d_sae)
                val = default_clamp(v.labels, f0, v.factors)
            f, _, val = limits.edit_row(f, "clamp", val, d_sae=v.d_sae)
            t0 = time.perf_counter()
            a, b = answer_pair(v, picture, f, val, min(ANSWER_TOKENS, limits.max_new_tokens))
            top, overlay, caption, fires = feature_pictures(v, picture, f)
            rec = v.labels.get(f) or {}
            done = (f"done in {time.perf_counter() - t0:.1f} s: feature {f} ({rec.get('label') or 'unlabelled'}, "
                    f"purity {rec.get('purity', 0)}) clamped to {val:g} at every token of the tower's layer; both "
                    f"answers from one batched generate. It fires on {fires} of the {len(v.gallery)} gallery images.")
            yield {plain: a, steered: b, strip: top, heat: overlay, heat_md: caption, status: done}
        except Exception as e:  # noqa: BLE001
            yield {status: "stopped by an error", error: error_html(e), plain: "", steered: "", strip: [],
                   heat: None, heat_md: ""}

    thumbs.select(pick_image, None, [chosen, image, chosen_md])
    image.upload(uploaded, None, [chosen, chosen_md])
    image.clear(lambda: (None, "no image yet"), None, [chosen, chosen_md])
    search_btn.click(search, [query], [results, error])
    query.submit(search, [query], [results, error])
    results.select(pick_feature, [results], [feature, value])
    run_btn.click(run, [chosen, image, feature, value], [plain, steered, strip, heat, heat_md, status, error])


def _caption(row: dict) -> str:
    return f"{row['kind']}: {row['name']}" + (" (held out)" if row.get("split") == "heldout" else "")


def _row(rows: Any, i: int) -> list | None:
    data = rows.values.tolist() if hasattr(rows, "values") else rows
    return data[i] if data and 0 <= i < len(data) else None
