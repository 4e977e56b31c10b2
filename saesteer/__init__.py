"""saesteer: put trained sparse autoencoders inside the models you already run.

>>> import saesteer
>>> model = saesteer.wrap(hf_causal_lm, sae="path/or/hub-id", layer=12)
>>> out = model.generate(**inputs, edits={1234: 8.0})      # clamp feature 1234 to 8.0

Names are imported on first use (PEP 562), so ``import saesteer`` and ``saesteer --help`` do not load
torch; ``saesteer.wrap`` and the rest load it when first touched.
"""

from __future__ import annotations

import importlib
from typing import Any

from saesteer.errors import (CompiledModelError, EditError, HookError, HubUnavailableError, SAEFormatError,
                             SaesteerError)

__version__ = "0.1.0"

#: public name -> the module it lives in
_NAMES = {
    **dict.fromkeys(("Add", "Clamp", "Edit", "EditSet", "Erase", "Scale", "Steer", "sae_for_vlm"), "saesteer.edits"),
    "FeatureActivations": "saesteer.features",
    "Positions": "saesteer.positions",
    **dict.fromkeys(("SAE", "SAEConfig", "load_sae", "save_sae"), "saesteer.sae"),
    **dict.fromkeys(("SteeredModel", "wrap"), "saesteer.steered"),
    "SARM": "saesteer.reward",
    "FeatureEdit": "saesteer.featureedit",
    "check": "saesteer.conformance",
}
#: sub-packages reachable as attributes without importing them first (``saesteer.embedded.load_default()``)
_LAZY = ("embedded", "eval", "integrations", "metrics", "train", "labeling", "labels", "data", "adapters", "conformance",
         "edits", "positions", "sae", "reward", "featureedit", "runtime", "features", "cli")

__all__ = [
    "SAE", "SAEConfig", "load_sae", "save_sae",
    "wrap", "SteeredModel", "FeatureActivations", "SARM",
    "FeatureEdit", "check",
    "Edit", "Clamp", "Erase", "Scale", "Add", "Steer", "EditSet", "Positions", "sae_for_vlm",
    "SaesteerError", "SAEFormatError", "HookError", "EditError", "HubUnavailableError", "CompiledModelError",
]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    if name in _LAZY:
        return importlib.import_module(f"saesteer.{name}")
    if name == "vllm":  # saesteer.vllm.attach(llm, sae): the vLLM plugin's verbs, under a short name
        return importlib.import_module("saesteer.integrations.vllm")
    raise AttributeError(f"module 'saesteer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES) | set(_LAZY) | {"vllm"})
