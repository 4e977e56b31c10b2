"""An SAE's report card (``saesteer eval``) and calibrated steering strength.

- :func:`report_card` (``saesteer.eval.card``): reconstruction, sparsity, L0 diagnostics and
  monosemanticity, SAE features beside the neurons of the same hook; :func:`render` writes the HTML.
- :func:`collect`: labelled activations from a model; :func:`corpus_labelled` / :func:`load_labelled`.
- :mod:`saesteer.eval.metrics` and :mod:`saesteer.eval.fms`: the metrics as tensor functions.
- :func:`steering_sweep` (``saesteer.eval.steering``): strengths and edit kinds against fluency.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "report_card": "saesteer.eval.card", "render": "saesteer.eval.html", "collect": "saesteer.eval.collect",
    "corpus_labelled": "saesteer.eval.collect", "load_labelled": "saesteer.eval.collect",
    "Labelled": "saesteer.eval.collect", "Activations": "saesteer.eval.collect", "fms": "saesteer.eval.fms",
    "steering_sweep": "saesteer.eval.steering", "auto_edit": "saesteer.eval.steering",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    if name in ("metrics", "card", "collect_module", "html", "svg", "cli", "steering"):
        return importlib.import_module(f"saesteer.eval.{name}")
    raise AttributeError(f"module 'saesteer.eval' has no attribute {name!r}")
