"""The saesteer demo app: ``saesteer demo`` (or ``python demos/app.py``) serves it, offline, on
127.0.0.1 by default.

Tabs: Steer (LLM edits, unsteered vs steered, per-token features); Erase (FeatureEdit: find the
features that carry a piece of knowledge, erase them, probe before/after); Reward (two responses
scored by a SARM reward model, feature contributions, reweighting); Vision (a tiny LLaVA's one-word
answer about an image without and with a vision-SAE feature clamped, the feature's top images and heat
map). The model/SAE pair is the embedded default (SmolLM2-135M-Instruct + the bundled SAE) unless the
command line or the page's "Model and SAE" box names another one by path or hub id; the Vision tab
always uses the shipped tiny LLaVA.

Errors follow one rule in every tab: a request that fails shows its message in its tab's error box and
clears the results it would have replaced, so nothing on screen is left over from an earlier request.
A failed Load keeps the session's pair (nothing else is loaded), and the line describing that pair
says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Sequence

import saesteer.demos  # noqa: F401 - switches Gradio's analytics off before Gradio loads
import gradio as gr

from saesteer.demos.limits import Limits
from saesteer.demos.models import ModelRegistry, PairKey, key_from_page
from saesteer.demos.options import add_demo_arguments
from saesteer.demos.page_errors import error_html
from saesteer.demos.steer_tab import build_steer_tab

TITLE = "saesteer: steer, erase and explain SAE features"
#: how the pair line ends after a failed Load: the session keeps the pair it had
FAILED_LOAD = "the pair typed below did not load"
#: system fonts only: Gradio's default theme would fetch Google Fonts, which an offline page cannot
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])


def build_app(registry: ModelRegistry, limits: Limits = Limits()) -> gr.Blocks:
    """The page, wired to ``registry``'s models. Building it loads the default pair (the page
    describes it) unless the registry holds it already; other pairs load when a visitor asks."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## {TITLE}\nEdits change the SAE features inside the model; the SAE's reconstruction "
                    "error stays in place, so an untouched token computes exactly as in the bare model.")
        pair_state = gr.State(registry.default)
        info = gr.Markdown(_describe(registry, registry.default), elem_id="pair-info")
        with gr.Accordion("Model and SAE (load another pair by path or hub id)", open=False):
            with gr.Row():
                model_box = gr.Textbox(label="Model: 'smollm2' (offline), a folder or a hub id",
                                       value=registry.default.model, elem_id="pair-model", max_length=300)
                sae_box = gr.Textbox(label="SAE: folder, file or hub id (empty: the bundled SAE)",
                                     value=registry.default.sae, elem_id="pair-sae", max_length=300)
                hook_box = gr.Textbox(label="Hook (empty: the SAE's own)", value=registry.default.hook,
                                      elem_id="pair-hook", max_length=300)
            load_btn = gr.Button("Load", elem_id="pair-load")
            pair_error = gr.HTML("", elem_id="pair-error")
        with gr.Tabs():
            with gr.Tab("Steer", id="steer", elem_id="tab-steer"):
                steer = build_steer_tab(registry, limits, pair_state)
            if featureedit_ready():
                from saesteer.demos.erase_tab import build_erase_tab

                with gr.Tab("Erase", id="erase", elem_id="tab-erase"):
                    build_erase_tab(registry, limits, pair_state)
            if reward_ready():
                from saesteer.demos.reward_tab import RewardModels, build_reward_tab

                with gr.Tab("Reward", id="reward", elem_id="tab-reward"):
                    build_reward_tab(RewardModels(), limits)
            if vision_ready():
                from saesteer.demos.vision_tab import VisionModels, build_vision_tab

                with gr.Tab("Vision", id="vision", elem_id="tab-vision"):
                    build_vision_tab(VisionModels(dtype=registry.dtype), limits)

        def load(model: str, sae: str, hook: str, key: PairKey) -> tuple[Any, ...]:
            try:
                new = key_from_page(model, sae, hook)
                registry.get(new)
                # another SAE numbers its features differently: the session's edits are dropped
                return new, _describe(registry, new), "", [], []
            except Exception as e:  # noqa: BLE001 - shown in the page
                still = f"{_describe(registry, key)} (still in use: {FAILED_LOAD})"
                return key, still, error_html(e), gr.update(), gr.update()

        load_btn.click(load, [model_box, sae_box, hook_box, pair_state],
                       [pair_state, info, pair_error, steer["edits_state"], steer["edits_table"]])
    return demo


def featureedit_ready() -> bool:
    """Whether FeatureEdit is part of this install (the Erase tab needs it)."""
    try:
        from saesteer.featureedit import FeatureEdit  # noqa: F401

        return True
    except ImportError:
        return False


def reward_ready() -> bool:
    """Whether the demo reward model ships with this install (the Reward tab needs it)."""
    try:
        from saesteer.reward import demo_path

        demo_path()
        return True
    except Exception:  # noqa: BLE001 - an install without it gets no Reward tab
        return False


def vision_ready() -> bool:
    """Whether the tiny LLaVA, its vision SAE and its gallery ship with this install (the Vision tab needs them)."""
    try:
        from saesteer.demos.vision_model import missing_vision_files

        return missing_vision_files() is None
    except Exception:  # noqa: BLE001 - an install without them gets no Vision tab
        return False


def _describe(registry: ModelRegistry, key: PairKey) -> str:
    try:
        pair = registry.get(key)
    except Exception:  # noqa: BLE001 - described lazily; the error shows when the pair is used
        return f"Model and SAE: **{key.describe()}**"
    sae = pair.sae
    labels = "labelled" if sae.labels is not None else "no labels"
    return (f"Model and SAE: **{key.describe()}** - {type(pair.model.model).__name__}, SAE with "
            f"{sae.d_sae} features ({labels}) at `{pair.hook}`")


def serve(args: argparse.Namespace, *, block: bool = True) -> tuple[gr.Blocks, str]:
    """Load the pair ``args`` name (so a bad path fails at once), build the page and serve it.
    Returns the app and its address; with ``block`` it serves until interrupted."""
    registry = ModelRegistry(PairKey(args.model, args.sae, args.hook), dtype=args.dtype)
    registry.get()
    limits = dataclasses.replace(Limits(), max_new_tokens=args.max_new_tokens)
    demo = build_app(registry, limits)
    demo.queue(default_concurrency_limit=max(1, args.concurrency), max_size=64)
    _, url, _ = demo.launch(server_name=args.host, server_port=args.port, theme=THEME,
                            prevent_thread_lock=True, show_error=False, quiet=True, ssr_mode=False,
                            mcp_server=False, footer_links=["gradio"])
    print(f"saesteer demo: {url}", flush=True)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo, url


def main(argv: Sequence[str] | None = None) -> int:
    """``python demos/app.py [--host H] [--port P] [--model M] [--sae S]``."""
    from saesteer.errors import SaesteerError

    args = add_demo_arguments(argparse.ArgumentParser(prog="saesteer demo", description=__doc__)).parse_args(argv)
    try:
        serve(args)
    except SaesteerError as e:
        print(f"saesteer demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
