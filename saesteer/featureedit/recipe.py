"""The recipe file: one FeatureEdit as reviewable, reproducible JSON, and the identity checks.

A recipe records what the edit was made for and what it does::

    {"saesteer_recipe": 1, "kind": "feature_erase",
     "model": {"name", "model_type", "hidden_size", "num_hidden_layers", "vocab_size",
               "embedding_fingerprint": [mean, std, norm of the first 8 rows]},
     "saes": {"blocks.15.hook_resid_post": {"hook", "name", "basis", "architecture", "d_in",
              "d_sae", "k", "weights_sha256"}},
     "units": "features" | "neurons", "method", "contrast_weight", "positions": "all" | "subject", "subjects",
     "erased_at": "every token but the first" | "the subjects' tokens",
     "features": [{"hook", "feature", "score", "target", "contrast", "label"}, ...],
     "target": [{"prompt", "answer", "subject"?}, ...], "contrast": [...]}

``weights_sha256`` hashes the SAE's tensors rounded to bfloat16, so the same SAE gives the same
hash whether it is attached in float32, float16 or bfloat16. The model is identified by its config
and a numeric fingerprint of its input embeddings (compared with a 1% tolerance, for the same
reason). Loading reads JSON only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from saesteer.errors import EditError
from saesteer.featureedit.neurons import PREFIX, is_neuron_basis
from saesteer.sae.module import SAE

VERSION = 1
KIND = "feature_erase"
_CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
_TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "b_mag", "r_mag")


def model_identity(model: torch.nn.Module) -> dict[str, Any]:
    """Config fields and an embedding fingerprint of a host model. Cost: one pass over the
    embedding matrix."""
    cfg = getattr(model, "config", None)
    text_cfg = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    out: dict[str, Any] = {"name": Path(str(getattr(cfg, "_name_or_path", "") or "")).name or type(model).__name__}
    for k in _CONFIG_KEYS:
        v = getattr(text_cfg, k, None) if k != "model_type" else getattr(cfg, k, None)
        out[k] = v if v is None or isinstance(v, (int, str)) else str(v)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    w = getattr(emb, "weight", None)
    if isinstance(w, torch.Tensor) and w.device.type != "meta":
        w = w.detach().float()
        out["embedding_fingerprint"] = [round(float(w.mean()), 8), round(float(w.std()), 8),
                                        round(float(w[:8].norm()), 6)]
    return out


def sae_identity(hook: str, sae: SAE) -> dict[str, Any]:
    """Structure and a dtype-independent weight hash of the SAE at ``hook``. Cost: one hash pass
    over the weights."""
    h = hashlib.sha256()
    for name in _TENSORS:
        t = getattr(sae, name, None)
        if isinstance(t, torch.Tensor):
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
    c = sae.cfg
    basis = "neurons" if is_neuron_basis(sae) else "features"
    name = f"{c.model_name or '?'}/{c.hook_name or hook}/{c.architecture}-{c.d_sae}"
    return {"hook": hook, "name": name, "basis": basis, "architecture": c.architecture, "d_in": c.d_in,
            "d_sae": c.d_sae, "k": c.k, "weights_sha256": h.hexdigest()}


def identity(steered: Any, hooks: list[str]) -> dict[str, Any]:
    """``{"model": ..., "saes": {hook: ...}}`` of a SteeredModel at ``hooks``."""
    return {"model": model_identity(steered.model),
            "saes": {h: sae_identity(h, steered.attachments[h].sae) for h in hooks}}


def differences(recorded: dict[str, Any], steered: Any) -> list[str]:
    """What differs between a recipe's recorded identity and ``steered`` (empty: it matches)."""
    diffs: list[str] = []
    mine = model_identity(steered.model)
    rec_m = recorded.get("model", {})
    for k in _CONFIG_KEYS:
        if rec_m.get(k) != mine.get(k):
            diffs.append(f"model {k}: recipe {rec_m.get(k)!r}, this model {mine.get(k)!r}")
    a, b = rec_m.get("embedding_fingerprint"), mine.get("embedding_fingerprint")
    if a is not None and b is not None and not all(math.isclose(x, y, rel_tol=1e-2, abs_tol=1e-6) for x, y in zip(a, b)):
        diffs.append(f"model weights: embedding fingerprint {a} in the recipe, {b} here "
                     f"(recipe made on {rec_m.get('name')!r}, this is {mine.get('name')!r})")
    for hook, rec in recorded.get("saes", {}).items():
        att = steered.attachments.get(hook)
        if att is None:
            attached = ", ".join(steered.attachments) or "none"
            what = "the neuron basis (use saesteer.featureedit.neuron_view(model))" if hook.startswith(PREFIX) else "an SAE"
            diffs.append(f"hook {hook}: the recipe needs {what} there; attached here: {attached}")
            continue
        have = sae_identity(hook, att.sae)
        for k in ("basis", "architecture", "d_in", "d_sae", "k", "weights_sha256"):
            if rec.get(k) != have.get(k):
                diffs.append(f"SAE at {hook} {k}: recipe {rec.get(k)!r} ({rec.get('name')}), "
                             f"attached {have.get(k)!r} ({have.get('name')})")
    return diffs


def write(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    p = Path(os.fspath(path)).expanduser()
    p.write_text(json.dumps({"saesteer_recipe": VERSION, "kind": KIND, **data}, indent=1) + "\n")
    return p


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The recipe's JSON, checked for version, kind and the fields a FeatureEdit needs."""
    p = Path(os.fspath(path)).expanduser()
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EditError(f"cannot read the recipe {p}: {e}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise EditError(f"{p} is not a FeatureEdit recipe (kind {data.get('kind') if isinstance(data, dict) else None!r})")
    if data.get("saesteer_recipe") != VERSION:
        raise EditError(f"{p}: recipe version {data.get('saesteer_recipe')!r}; this saesteer reads version {VERSION}")
    missing = [k for k in ("model", "saes", "features", "positions", "units") if k not in data]
    if missing:
        raise EditError(f"{p}: recipe lacks {', '.join(missing)}")
    return data
