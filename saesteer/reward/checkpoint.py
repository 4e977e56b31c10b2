"""Saving and loading SARM reward models: saesteer's own folder, and SARM's released checkpoints.

saesteer's folder (``SARM.save``) holds only what the reward model adds to its backbone:

- ``sarm.json``: the hook, layers kept, ``use_topk``, where the SAE and the backbone come from,
  the context length, and an optional card (training report, labeller);
- ``score.safetensors``: ``score.weight [1, d_sae]`` (SARM's key);
- ``sae/``: the SAE in SAELens format, unless it is the SAE bundled with saesteer (then named).

SARM's release (schrieffer-z/sarm ``LlamaSARM``): ``config.json`` with ``sarm_param`` and
safetensors (sharded or not) holding ``model.embed_tokens``/``model.layers.{0..L-1}``/``model.norm``,
``score.weight [1, F]`` and ``sae.{pre_bias, latent_bias, encoder.weight, decoder.weight}``. The
backbone is built from ``config.json`` with the ``L`` layers the checkpoint holds (transformers
reads the ``model.`` keys; the SAE and score keys are read by saesteer); its ``norm`` is loaded but
never applied. Nothing here executes code from a file: safetensors and json only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from saesteer.errors import RewardError
from saesteer.sae.formats import read_json, read_safetensors, safetensors_keys

CONFIG = "sarm.json"
WEIGHTS = "score.safetensors"
FORMAT = "saesteer.sarm"


def is_saesteer_folder(path: Path) -> bool:
    return (path / CONFIG).is_file()


def write(folder: Path, config: dict[str, Any], weight: torch.Tensor) -> None:
    """Write ``sarm.json`` and ``score.safetensors`` (fp32) into ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"score.weight": weight.detach().float().cpu().reshape(1, -1).contiguous()}, str(folder / WEIGHTS),
              metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps({"format": FORMAT, "version": 1, **config}, indent=1) + "\n",
                                 encoding="utf-8")


def read(folder: Path) -> tuple[dict[str, Any], torch.Tensor]:
    """``(config, weight [1, d_sae])`` of a saesteer SARM folder."""
    cfg = read_json(folder / CONFIG)
    if cfg.get("format") != FORMAT:
        raise RewardError(f"{folder / CONFIG} is not a saesteer reward model (format {cfg.get('format')!r})")
    if not (folder / WEIGHTS).is_file():
        raise RewardError(f"{folder} has no {WEIGHTS}")
    w = read_safetensors(folder / WEIGHTS, ["score.weight"])["score.weight"]
    return cfg, w


# --------------------------------------------------------------------------------- SARM's release
def _sarm_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        wm = read_json(index).get("weight_map") or {}
        return sorted({folder / v for v in wm.values()})
    return sorted(p for p in folder.glob("*.safetensors"))


def _layers_in(keys: list[str]) -> int:
    ids = {int(m.group(1)) for k in keys if (m := re.match(r"^model\.layers\.(\d+)\.", k))}
    return max(ids) + 1 if ids else 0


def use_topk_of(sarm_param: dict[str, Any], name: str) -> bool:
    """SARM's switch between the top-k latents and the dense pre-activations: ``sarm_use_activation``
    (or ``sarm_use_topk``) in ``config.json``, else ``woTopK`` in the checkpoint's name."""
    for key in ("sarm_use_activation", "sarm_use_topk", "sae4rm_use_topk"):
        if key in sarm_param:
            return bool(sarm_param[key])
    return "wotopk" not in name.lower()


def read_release(folder: Path, backbone: Any = None, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The parts of a SARM release checkpoint: ``sae``, ``weight``, ``use_topk``, ``layers_kept``,
    ``backbone`` (built from the folder when not given) and ``tokenizer`` (when the folder has one).

    Cost: reads the SAE and score tensors; building the backbone reads its ``L`` layers."""
    from saesteer.sae.formats import sarm as sarm_format

    if not folder.is_dir():
        raise RewardError(f"a SARM checkpoint is a folder; got {folder}")
    sae = sarm_format.load(folder)
    meta = sae.cfg.metadata
    if "score_key" not in meta:
        raise RewardError(f"{folder} holds a SARM SAE but no score.weight: not a reward-model checkpoint")
    weight = read_safetensors(folder / meta["score_file"], [meta["score_key"]])[meta["score_key"]]
    if weight.ndim != 2 or weight.shape[0] != 1:
        raise RewardError(f"score.weight has shape {tuple(weight.shape)}; a SARM head is [1, d_sae]")
    keys = [k for f in _sarm_files(folder) for k in safetensors_keys(f)]
    layers = meta.get("sae_source_layer") or _layers_in(keys)
    if not layers:
        raise RewardError(f"{folder}: cannot tell how many decoder layers the SARM keeps (no sarm_param.sae_source_layer, no model.layers.* keys)")
    out: dict[str, Any] = {"sae": sae, "weight": weight, "layers_kept": int(layers),
                           "use_topk": use_topk_of(meta.get("sarm_param") or {}, folder.as_posix()),
                           "backbone": backbone, "tokenizer": None}
    if backbone is None:
        out["backbone"] = _build_backbone(folder, int(layers), keys, dtype)
    if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        from transformers import AutoTokenizer

        out["tokenizer"] = AutoTokenizer.from_pretrained(str(folder))
    return out


def _build_backbone(folder: Path, layers: int, keys: list[str], dtype: torch.dtype | None) -> Any:
    from transformers import AutoConfig, AutoModel

    if not (folder / "config.json").is_file():
        raise RewardError(f"{folder} has no config.json to build the backbone from; pass backbone=")
    if _layers_in(keys) < layers:
        raise RewardError(f"{folder} holds {_layers_in(keys)} decoder layers but the SARM reads layer {layers}")
    cfg = AutoConfig.from_pretrained(str(folder))
    cfg.num_hidden_layers = layers  # the release keeps only these; the rest never existed
    if hasattr(cfg, "layer_types") and isinstance(cfg.layer_types, list):
        cfg.layer_types = cfg.layer_types[:layers]
    model, info = AutoModel.from_pretrained(str(folder), config=cfg, use_safetensors=True, dtype=dtype or torch.float32,
                                            output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if "rotary" not in k]
    if missing:
        raise RewardError(f"{folder}: the backbone weights are incomplete (missing {missing[:4]}...)")
    return model.eval()
