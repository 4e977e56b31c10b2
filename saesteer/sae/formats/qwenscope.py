"""Qwen Scope (``Qwen/SAE-Res-<model>-W<N>K-L0_<k>``): TopK residual-stream SAEs, one torch file per layer.

Facts checked against sae-lens 6.54 (``get_qwen_scope_config_from_hf``,
``qwen_scope_sae_huggingface_loader``, ``_parse_qwen_scope_repo_id``, ``QWEN_SCOPE_MODEL_INFO``):

- each ``layer{n}.sae.pt`` is a torch dict of ``W_enc (d_sae, d_in)``, ``W_dec (d_in, d_sae)``,
  ``b_enc [d_sae]``, ``b_dec [d_in]``; sae-lens transposes both matrices into its layout (so do we);
- architecture ``topk`` with ``k`` the repo name's ``L0_<k>`` and ``d_sae = N * 1024`` from its
  ``W<N>K``; ``apply_b_dec_to_input`` False; no normalisation; encode keeps the top-k of
  ``x @ W_enc + b_enc`` with a ReLU on the kept values, decode ``f @ W_dec + b_dec``;
- hook ``blocks.{n}.hook_resid_post`` (HF ``model.layers.{n}``), the model and its width from the
  repo name's ``<model>`` (table below, sae-lens's).

The files do not record ``k``. saesteer reads it from a folder on the file's path named like the repo
(the HuggingFace cache keeps ``models--Qwen--SAE-Res-...``), or takes ``load_sae(..., k=...)``; without
either, loading fails and says so. A ``k`` given that differs from the folder name's wins, with a warning.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae
from saesteer.sae.formats.fields import linear_pair
from saesteer.sae.formats.torchfile import QWEN_FILE, state_dict
from saesteer.sae.module import SAE, SAEConfig

NAME = "qwenscope"
LAYOUT = "layer<n>.sae.pt with W_enc/W_dec/b_enc/b_dec; k from a SAE-Res-<model>-W<N>K-L0_<k> folder or k="
_REPO = re.compile(r"SAE-Res-(.+?)-W(\d+)K-L0_(\d+)")
#: sae-lens's QWEN_SCOPE_MODEL_INFO: model key in the repo name -> (HF model id, hidden size)
MODELS: dict[str, tuple[str, int]] = {
    "Qwen3-1.7B-Base": ("Qwen/Qwen3-1.7B-Base", 2048),
    "Qwen3-8B-Base": ("Qwen/Qwen3-8B-Base", 4096),
    "Qwen3-30B-A3B-Base": ("Qwen/Qwen3-30B-A3B-Base", 2048),
    "Qwen3.5-2B-Base": ("Qwen/Qwen3.5-2B-Base", 2048),
    "Qwen3.5-9B-Base": ("Qwen/Qwen3.5-9B-Base", 4096),
    "Qwen3.5-27B": ("Qwen/Qwen3.5-27B", 5120),
    "Qwen3.5-35B-A3B-Base": ("Qwen/Qwen3.5-35B-A3B-Base", 2048),
}


def detect(folder: Path) -> bool:
    """A folder holding ``layer<n>.sae.pt`` files."""
    return any(QWEN_FILE.match(p.name) for p in folder.iterdir())


def repo_facts(path: Path) -> tuple[str, int, int] | None:
    """(model key, d_sae, k) from the nearest folder on ``path`` named like a Qwen Scope repo."""
    for part in reversed(path.parts):
        m = _REPO.search(part)
        if m:
            return m.group(1), int(m.group(2)) * 1024, int(m.group(3))
    return None


def _layer_files(folder: Path) -> dict[int, Path]:
    return {int(m.group(1)): p for p in folder.iterdir() if (m := QWEN_FILE.match(p.name))}


def _pick(folder: Path, hookpoint: str | None) -> Path:
    files = _layer_files(folder)
    if len(files) == 1 and hookpoint is None:
        return next(iter(files.values()))
    layers = ", ".join(f"layer{n}" for n in sorted(files))
    if hookpoint is None:
        raise SAEFormatError(f"{folder} holds Qwen Scope SAEs for several layers; pass hookpoint= one of: {layers} "
                             "(or blocks.<n>.hook_resid_post)")
    m = re.fullmatch(r"(?:layer|blocks\.|model\.layers\.)?(\d+)(?:\.sae\.pt|\.hook_resid_post)?", hookpoint)
    if m is None or int(m.group(1)) not in files:
        raise SAEFormatError(f"no Qwen Scope SAE for hookpoint {hookpoint!r} in {folder}; available: {layers}")
    return files[int(m.group(1))]


def load(path: Path, *, hookpoint: str | None = None, k: int | None = None) -> SAE:
    """Read one ``layer<n>.sae.pt`` (the file, or a folder holding it; ``hookpoint=`` picks the layer
    of a folder holding several). ``k``: the TopK k, needed when no folder on the path names it."""
    file = path if path.is_file() else _pick(path, hookpoint)
    return from_state_dict(state_dict(file), file, k=k)


def _k(file: Path, k: Any, facts: tuple[str, int, int] | None) -> int:
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SAEFormatError(f"k must be a positive whole number, got {k!r}")
        if facts is not None and facts[2] != k:
            warnings.warn(f"{file}: k={k} given, but the folder name says L0_{facts[2]}; using k={k}", stacklevel=4)
        return k
    if facts is None:
        raise SAEFormatError(
            f"{file}: a Qwen Scope file does not record its TopK k, and no folder on its path is named like its "
            "repo (SAE-Res-<model>-W<N>K-L0_<k>, e.g. SAE-Res-Qwen3-1.7B-Base-W32K-L0_50). Pass k= to load_sae "
            "(the L0_<k> of the repo it came from), or keep the file in a folder named like the repo")
    return facts[2]


def from_state_dict(sd: dict[str, Any], file: Path, *, k: int | None = None) -> SAE:
    """A Qwen Scope SAE from its state dict (already read with ``torch.load(weights_only=True)``)."""
    t = linear_pair(sd, file, "W_enc", "W_dec", "b_enc", "b_dec")  # stored (d_sae, d_in) / (d_in, d_sae)
    F, d = t["W_enc"].shape[1], t["W_enc"].shape[0]
    facts = repo_facts(file.parent)
    meta: dict[str, Any] = {}
    model_name = None
    if facts is not None:
        key, width, _ = facts
        meta.update({"qwen_scope_model": key, "repo_width": width, "repo_k": facts[2]})
        if width != F:
            raise SAEFormatError(f"{file}: the folder name says W{width // 1024}K (d_sae={width}) but W_enc has "
                                 f"d_sae={F}")
        if key in MODELS:
            model_name, width_in = MODELS[key]
            if width_in != d:
                raise SAEFormatError(f"{file}: {key} has hidden size {width_in} but W_enc has d_in={d}")
    k = _k(file, k, facts)
    m = QWEN_FILE.match(file.name)
    hook = None
    if m:
        meta["hf_hook_name"] = f"model.layers.{m.group(1)}"
        hook = f"blocks.{m.group(1)}.hook_resid_post"
    cfg = SAEConfig(
        d_in=d, d_sae=F, architecture="topk", k=k, apply_b_dec_to_input=False, topk_relu=True,
        source_architecture="qwen_scope_topk", source_format=NAME, hook_name=hook, model_name=model_name,
        metadata=meta,
    )
    return build_sae(cfg, t)
