"""The demo's command-line options, shared by ``saesteer demo`` and ``python demos/app.py``.

Kept apart from the app so that building the ``saesteer`` command's parser never imports Gradio.
"""

from __future__ import annotations

import argparse


def add_demo_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the demo's options to ``p`` and return it."""
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    p.add_argument("--model", default="smollm2", help="'smollm2' (offline default), a model folder or a hub id")
    p.add_argument("--sae", default="", help="SAE folder/file or hub id (default: the bundled SAE)")
    p.add_argument("--hook", default="", help="e.g. blocks.15.hook_resid_post (default: the SAE's own hook)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="model dtype (bfloat16 is about twice as fast on CPU)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="the most tokens one request may generate")
    p.add_argument("--concurrency", type=int, default=4, help="requests served at once (each in its own thread)")
    return p
