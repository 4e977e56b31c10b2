"""saprmarks/dictionary_learning ``ae.pt`` (+ ``config.json``), also what sae-for-vlm ships.

Facts checked against saprmarks/dictionary_learning (``dictionary_learning/dictionary.py`` and
``trainers/{top_k,batch_top_k,matryoshka_batch_top_k}.py`` at commit 5ebe376):

- ``AutoEncoder``: ``relu(encoder(x - bias))``, ``decoder(f) + bias``; ``from_pretrained`` by
  default normalises the decoder columns (``decoder /= n``, ``encoder.weight *= n``,
  ``encoder.bias *= n``, same reconstruction) and so do we.
- ``AutoEncoderTopK``: ``topk(relu(encoder(x - b_dec)))``; ``encode`` uses its ``threshold`` buffer
  only with ``use_threshold=True`` (default False), so it is a TopK SAE.
- ``BatchTopKSAE`` / ``MatryoshkaBatchTopKSAE``: ``encode`` defaults to ``use_threshold=True``:
  ``relu(z) * (relu(z) > threshold)`` with a scalar threshold, i.e. JumpReLU with the threshold
  broadcast (equal for threshold >= 0). With the threshold unset (-1) that default is plain ReLU
  (every positive pre-activation kept, not k per token): saesteer follows the reference and reads it
  as a ReLU SAE, warns that the file's threshold was never set, and records
  ``metadata["threshold_unset"]``. Matryoshka keeps ``W_enc [d,F]``, ``b_enc``, ``W_dec [F,d]``,
  ``b_dec``, ``k``, ``threshold``, ``group_sizes``.
- ``JumpReluAutoEncoder``: ``relu(z * (z > threshold))`` with ``z = x @ W_enc + b_enc``;
  ``apply_b_dec_to_input`` is False (not saved; sae-lens assumes the same).
- ``GatedAutoEncoder``: ``x_enc = encoder(x - decoder_bias)``; gate ``x_enc + gate_bias > 0``;
  magnitude ``relu(exp(r_mag) * x_enc + mag_bias)``; ``decoder(f) + decoder_bias`` (the
  ``normalize_decoder`` flag of encode/decode defaults to False).
- ``AutoEncoderNew``: ``relu(encoder(x))``, ``decoder(f)`` with a decoder bias (no input shift).
- sae-for-vlm ships the older spelling ``MatroyshkaBatchTopKSAE`` (``trainers/matroyshka_batch_top_k.py``
  of its vendored copy): the same keys and ``encode``; its ``config.json`` leaves ``layer``, ``lm_name``
  and ``submodule_name`` empty (the hook then comes from the caller or the adapter).
- ``config.json``: ``{"trainer": {"dict_class", "activation_dim", "dict_size", "k", "layer",
  "lm_name", "submodule_name", ...}}``; submodule names like ``resid_post_layer_3`` name the output
  of decoder layer 3.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from saesteer.errors import SAEFormatError
from saesteer.sae.formats import build_sae, read_json
from saesteer.sae.module import SAE, SAEConfig

NAME = "dictionary_learning"
LAYOUT = "ae.pt [+ config.json]"
WEIGHTS_FILE = "ae.pt"
CONFIG_FILE = "config.json"
CLASSES = ("AutoEncoder", "AutoEncoderNew", "AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE",
           "JumpReluAutoEncoder", "GatedAutoEncoder")
#: older spellings of class names, as saved by forks of the library
ALIASES = {"MatroyshkaBatchTopKSAE": "MatryoshkaBatchTopKSAE"}
_HOOKS = [
    (re.compile(r"resid_post_layer_(\d+)$"), "blocks.{}.hook_resid_post"),
    (re.compile(r"resid_pre_layer_(\d+)$"), "blocks.{}.hook_resid_pre"),
    (re.compile(r"mlp(?:_out)?_layer_(\d+)$"), "blocks.{}.hook_mlp_out"),
    (re.compile(r"attn(?:_out)?_layer_(\d+)$"), "blocks.{}.hook_attn_out"),
]


def detect(folder: Path) -> bool:
    """A folder with ``ae.pt``."""
    return (folder / WEIGHTS_FILE).is_file()


def guess_class(sd: dict[str, torch.Tensor]) -> str:
    """The dictionary class a state dict belongs to, from its keys (AutoEncoderTopK and
    BatchTopKSAE share keys: without config.json we take AutoEncoderTopK, per-token top-k)."""
    keys = set(sd)
    if {"decoder_bias", "r_mag", "gate_bias", "mag_bias"} <= keys:
        return "GatedAutoEncoder"
    if "group_sizes" in keys:
        return "MatryoshkaBatchTopKSAE"
    if {"W_enc", "W_dec", "threshold"} <= keys and sd["threshold"].ndim == 1:
        return "JumpReluAutoEncoder"
    if {"encoder.weight", "b_dec", "k"} <= keys:
        return "AutoEncoderTopK"
    if {"encoder.weight", "bias"} <= keys:
        return "AutoEncoder"
    if {"encoder.weight", "decoder.weight", "decoder.bias"} <= keys:
        return "AutoEncoderNew"
    raise SAEFormatError(f"cannot tell the dictionary_learning class from keys {sorted(keys)}")


def hook_name_for(submodule_name: Any, layer: Any) -> str | None:
    """TransformerLens hook name for a dictionary_learning submodule name, when it is obvious."""
    if isinstance(submodule_name, str):
        for pat, fmt in _HOOKS:
            m = pat.search(submodule_name)
            if m:
                return fmt.format(m.group(1))
    return None


def _threshold_or_topk(sd: dict[str, torch.Tensor], F: int, k: int | None, meta: dict[str, Any]
                       ) -> tuple[str, dict[str, torch.Tensor]]:
    th = sd.get("threshold")
    if th is not None and float(th.reshape(-1)[0]) >= 0:
        return "jumprelu", {"threshold": th.reshape(()).to(torch.float32).expand(F).clone()}
    import warnings

    meta["threshold_unset"] = True
    warnings.warn("this BatchTopK SAE's threshold was never set (-1): dictionary_learning's own encode then keeps "
                  "every positive pre-activation (plain ReLU, not k per token), and saesteer does the same. Its "
                  "features are denser than the SAE was trained for.", stacklevel=5)
    return "relu", {}


def _split_linear(sd: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_enc [d,F], W_dec [F,d]) from nn.Linear weights encoder [F,d], decoder [d,F]."""
    return sd["encoder.weight"].T, sd["decoder.weight"].T


def convert(sd: dict[str, torch.Tensor], cls: str, trainer: dict[str, Any]) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """Map one class's state dict onto our layout; returns (config, tensors)."""
    sd = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}
    meta: dict[str, Any] = {"dict_class": cls}
    k = trainer.get("k", int(sd["k"]) if "k" in sd else None)
    k = int(k) if k is not None else None
    apply_b_dec, arch = True, "relu"
    if cls == "AutoEncoder":
        W_enc, W_dec = _split_linear(sd)
        b_enc, b_dec = sd["encoder.bias"], sd["bias"]
        n = W_dec.norm(dim=1)
        if not torch.allclose(n, torch.ones_like(n)):  # as AutoEncoder.from_pretrained(normalize_decoder=True)
            W_dec, W_enc, b_enc = W_dec / n[:, None], W_enc * n[None, :], b_enc * n
            meta["decoder_normalized"] = True
        t = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}
    elif cls == "AutoEncoderNew":
        W_enc, W_dec = _split_linear(sd)
        t = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": sd["encoder.bias"], "b_dec": sd["decoder.bias"]}
        apply_b_dec = False
    elif cls in ("AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        if cls == "MatryoshkaBatchTopKSAE":
            W_enc, W_dec = sd["W_enc"], sd["W_dec"]
            t = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": sd["b_enc"], "b_dec": sd["b_dec"]}
            gs = sd.get("group_sizes", trainer.get("group_sizes"))
            if gs is not None:
                meta["group_sizes"] = [int(g) for g in torch.as_tensor(gs).reshape(-1).tolist()]
        else:
            W_enc, W_dec = _split_linear(sd)
            t = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": sd["encoder.bias"], "b_dec": sd["b_dec"]}
        if "threshold" in sd:
            meta["threshold"] = float(sd["threshold"].reshape(-1)[0])
        if cls == "AutoEncoderTopK":
            arch = "topk"
        else:
            arch, extra = _threshold_or_topk(sd, W_enc.shape[1], k, meta)
            t.update(extra)
    elif cls == "JumpReluAutoEncoder":
        t = {n: sd[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")}
        arch, apply_b_dec = "jumprelu", False
    elif cls == "GatedAutoEncoder":
        W_enc, W_dec = _split_linear(sd)
        t = {"W_enc": W_enc, "W_dec": W_dec, "b_dec": sd["decoder_bias"], "b_gate": sd["gate_bias"],
             "b_mag": sd["mag_bias"], "r_mag": sd["r_mag"]}
        arch = "gated"
    else:
        raise SAEFormatError(f"dictionary_learning class {cls!r} is not supported; known: {', '.join(CLASSES)}")
    d, F = t["W_enc"].shape
    for key in ("layer", "lm_name", "submodule_name", "trainer_class"):
        if trainer.get(key) is not None:
            meta[key] = trainer[key]
    cfg = SAEConfig(
        d_in=int(d), d_sae=int(F), architecture=arch, k=k if arch == "topk" else None,
        apply_b_dec_to_input=apply_b_dec, source_architecture=cls, source_format=NAME,
        hook_name=hook_name_for(trainer.get("submodule_name"), trainer.get("layer")),
        model_name=trainer.get("lm_name"), metadata=meta,
    )
    return cfg, t


def load(path: Path, *, hookpoint: str | None = None, k: int | None = None) -> SAE:  # noqa: ARG001
    """Read ``ae.pt`` with ``torch.load(weights_only=True)`` (+ ``config.json`` beside it). A torch
    file whose keys belong to another family (SARM, Qwen Scope, Goodfire, DeepSeek R1: see
    :mod:`~saesteer.sae.formats.torchfile`) is handed to that reader (``k`` only to Qwen Scope's)."""
    from saesteer.sae.formats import torchfile

    file = path if path.is_file() else path / WEIGHTS_FILE
    sd = torchfile.state_dict(file)
    other = torchfile.family_of_state_dict(sd, file)
    if other == "qwenscope":
        from saesteer.sae.formats import qwenscope

        return qwenscope.from_state_dict(sd, file, k=k)
    if k is not None:
        raise SAEFormatError(f"k= is only for SAE files that do not record their TopK k (Qwen Scope); {file} is "
                             "not one")
    if other != NAME:
        import importlib

        return importlib.import_module(f"saesteer.sae.formats.{other}").from_state_dict(sd, file)
    cfg_file = file.parent / CONFIG_FILE
    trainer: dict[str, Any] = {}
    if cfg_file.is_file():
        trainer = dict(read_json(cfg_file).get("trainer") or {})
    cls = trainer.get("dict_class") or guess_class(sd)
    cls = ALIASES.get(str(cls), cls)
    if not trainer.get("dict_class"):
        trainer["_guessed"] = True
    cfg, tensors = convert(sd, str(cls), trainer)
    if trainer.get("_guessed"):
        cfg.metadata["dict_class_guessed"] = True
    if trainer.get("activation_dim") not in (None, cfg.d_in) or trainer.get("dict_size") not in (None, cfg.d_sae):
        raise SAEFormatError(
            f"{cfg_file}: activation_dim/dict_size {trainer.get('activation_dim')}/{trainer.get('dict_size')} "
            f"do not match the weights ({cfg.d_in}/{cfg.d_sae})"
        )
    return build_sae(cfg, tensors)
