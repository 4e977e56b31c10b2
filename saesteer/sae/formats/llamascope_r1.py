"""Llama Scope R1-Distill (``fnlp/Llama-Scope-R1-Distill``): JumpReLU SAEs, ``config.json`` +
``sae_weights.safetensors`` per folder (``800M-Slimpajama-0-OpenR1-Math-220k/L{layer}R``).

Facts checked against sae-lens 6.54 (``get_llama_scope_r1_distill_config_from_hf``,
``llama_scope_r1_distill_sae_huggingface_loader``, ``SAE.from_pretrained_with_cfg_and_sparsity``) and
its ``pretrained_saes.yaml``:

- ``config.json`` has ``d_model``, ``expansion_factor`` (``d_sae = d_model * expansion_factor``),
  ``hook_point_in`` (the hook); ``sae_weights.safetensors`` holds ``encoder.weight [F,d]``,
  ``encoder.bias``, ``decoder.weight [d,F]``, ``decoder.bias`` and ``log_jumprelu_threshold [F]``
  (threshold ``= exp``, per feature, not rescaled); sae-lens transposes both weights;
- JumpReLU, ``apply_b_dec_to_input`` False, model ``meta-llama/Llama-3.1-8B`` (sae-lens's name),
  ``normalize_activations = "expected_average_only_in"``: the SAE reads activations scaled by a
  dataset-wide ``s``; ``from_pretrained`` folds ``s`` from its release list (``W_enc *= s``,
  ``W_dec /= s``, ``b_dec /= s``), and every entry of that list is ``sqrt(4096) / norm`` (53.53 =
  64 / 1.19559 for L0R), Llama Scope's own rule. The file names clash with SAELens's
  (``sae_weights.safetensors``) but SAELens folders have ``cfg.json``, these ``config.json``.

sae-lens reads ``s`` only from its list. saesteer folds ``sqrt(d_model) / in`` when ``config.json``
has ``dataset_average_activation_norm.in``; otherwise it leaves the weights unscaled and marks
``metadata["input_scale_unknown"]``: loading by release name (``load_sae("llama_scope_r1_distill",
"<sae id>")``) folds the list's ``s``, and a local load without it warns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae, read_json, read_safetensors, safetensors_keys
from saesteer.sae.formats.fields import Fields, shaped
from saesteer.sae.formats.llamascope import input_scale, linear_weights, one_hook
from saesteer.sae.module import SAE, SAEConfig

NAME = "llamascope_r1"
LAYOUT = "config.json (d_model, expansion_factor, hook_point_in) + sae_weights.safetensors with encoder.*/decoder.*"
CFG_FILE = "config.json"
WEIGHTS_FILE = "sae_weights.safetensors"
MODEL = "meta-llama/Llama-3.1-8B"
_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias", "log_jumprelu_threshold")


def detect(folder: Path) -> bool:
    """``config.json`` + ``sae_weights.safetensors`` and no SAELens ``cfg.json``, the config naming
    ``d_model`` and ``hook_point_in`` or the weights holding ``log_jumprelu_threshold`` (json / header only)."""
    if (folder / "cfg.json").is_file() or not (folder / CFG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        return False
    try:
        cfg = read_json(folder / CFG_FILE)
        if "d_model" in cfg and "hook_point_in" in cfg:
            return True
        return "log_jumprelu_threshold" in safetensors_keys(folder / WEIGHTS_FILE)
    except SAEFormatError:
        return False


def load(path: Path, *, hookpoint: str | None = None) -> SAE:  # noqa: ARG001 - one SAE per folder
    """Read a Llama Scope R1-Distill folder (or its ``sae_weights.safetensors``) into an fp32 JumpReLU SAE."""
    folder = path.parent if path.is_file() else path
    where, wfile = folder / CFG_FILE, folder / WEIGHTS_FILE
    f = Fields(read_json(where), where)
    d = f.whole("d_model")
    F = d * f.whole("expansion_factor")
    hook_in = one_hook(f, where)
    t = read_safetensors(wfile)
    why = f"d_model={d}, d_sae={F} (d_model * expansion_factor) from {CFG_FILE}"
    tensors = {**linear_weights(t, wfile, d, F, why),
               "threshold": shaped(t, "log_jumprelu_threshold", wfile, (F,), why).exp()}
    meta: dict[str, Any] = {"hook_point_in": hook_in, "normalize_activations": "expected_average_only_in"}
    scale = None
    if f.has("dataset_average_activation_norm"):
        scale, norms = input_scale(f, d)
        meta.update(norms)
    else:
        meta["input_scale_unknown"] = True
    cfg = SAEConfig(
        d_in=d, d_sae=F, architecture="jumprelu", apply_b_dec_to_input=False, source_architecture="jumprelu",
        source_format=NAME, hook_name=hook_in, model_name=MODEL, metadata=meta,
    )
    sae = build_sae(cfg, tensors)
    if scale is not None:
        sae.fold_input_scale(scale)
        meta["norm_scaling_factor"] = scale
    return sae
