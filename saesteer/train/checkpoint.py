"""Resumable training checkpoints: one safetensors file holding the parameters, the Adam moments, the
dead-latent counters and the torch RNG state, with the rest of the state (step, tokens seen, data
position, scale, BatchTopK threshold, p-annealing's schedule, config) as JSON in the file's metadata. No pickle.

The file is written beside and then moved over the old one (``os.replace``), so a run killed while
saving keeps its previous checkpoint. A readable copy of the JSON goes to ``state.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from saesteer.train.config import TrainConfig
from saesteer.train.step import SAETrainer

FILE = "state.safetensors"
VERSION = 1


def save_checkpoint(trainer: SAETrainer, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``trainer``'s full state (and ``extra`` JSON, e.g. the data position) to ``folder``.
    Cost: one copy of the parameters and Adam moments (about 3x the SAE's size)."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, p in trainer.params.items():
        tensors[f"param.{name}"] = p.detach()
        tensors[f"adam_m.{name}"] = trainer.adam_m[name]
        tensors[f"adam_v.{name}"] = trainer.adam_v[name]
    tensors["tokens_since_fired"] = trainer.tokens_since_fired
    if trainer.recon_weights is not None:
        tensors["recon_weights"] = trainer.recon_weights
    tensors["rng.torch"] = torch.get_rng_state()
    tensors = {k: v.to("cpu").contiguous() for k, v in tensors.items()}
    state = {
        "version": VERSION, "step": trainer.step_count, "tokens_seen": trainer.tokens_seen,
        "d_in": trainer.d_in, "d_sae": trainer.d_sae, "scale": trainer.scale,
        "batch_threshold": trainer.batch_threshold,
        "threshold_count": trainer.threshold_count, "extra_state": trainer.extra_state(),
        "config": trainer.cfg.to_dict(), **(extra or {}),
    }
    text = json.dumps(state)
    tmp = out / (FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"state": text})
    os.replace(tmp, out / FILE)
    (out / "state.json").write_text(json.dumps(state, indent=1))
    return out / FILE


def has_checkpoint(folder: str | os.PathLike) -> bool:
    return (Path(folder) / FILE).is_file()


def load_checkpoint(folder: str | os.PathLike, cfg: TrainConfig, *,
                    restore_rng: bool = True) -> tuple[SAETrainer, dict[str, Any]]:
    """Rebuild the trainer saved in ``folder`` under ``cfg`` (which may extend ``total_tokens``;
    the fields in ``TrainConfig.RESUME_KEYS`` must match). Returns ``(trainer, state json)``."""
    from safetensors import safe_open

    path = Path(folder) / FILE
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state = json.loads((f.metadata() or {})["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    saved = state["config"]
    now = cfg.to_dict()
    mismatched = [k for k in TrainConfig.RESUME_KEYS if saved.get(k) != now.get(k)]
    if mismatched:
        diffs = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {getattr(cfg, k)!r}" for k in mismatched)
        raise ValueError(f"cannot resume {path} under a different config ({diffs}); use another out_dir "
                         "or resume=False")
    trainer = SAETrainer(cfg, int(state["d_in"]))
    with torch.no_grad():
        for name, p in trainer.params.items():
            p.copy_(tensors[f"param.{name}"])
            trainer.adam_m[name].copy_(tensors[f"adam_m.{name}"])
            trainer.adam_v[name].copy_(tensors[f"adam_v.{name}"])
    trainer.tokens_since_fired = tensors["tokens_since_fired"].to(trainer.device)
    if "recon_weights" in tensors:
        trainer.recon_weights = tensors["recon_weights"].to(trainer.device)
    trainer.step_count = int(state["step"])
    trainer.tokens_seen = int(state["tokens_seen"])
    trainer.scale = state["scale"]
    trainer.batch_threshold = float(state["batch_threshold"])
    trainer.threshold_count = int(state.get("threshold_count", 0))
    trainer.load_extra_state(state.get("extra_state") or {})
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
    return trainer, state
