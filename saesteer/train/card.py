"""The training card written beside a trained SAE: ``training_card.json`` (machine-readable) and a
short ``README.md``. It says where the SAE reads (model, hook), how it was trained (architecture, k,
widths, tokens, config or command) and how good it is (L0, FVU, dead fraction, CE-loss recovered)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from saesteer.sae.module import SAE
from saesteer.train.config import K_ARCHITECTURES
from saesteer.train.step import SAETrainer

CARD_FILE = "training_card.json"
README_FILE = "README.md"


def _mean(rows: list[dict[str, float]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r and math.isfinite(r[key])]
    return sum(vals) / len(vals) if vals else None


def training_card(
    trainer: SAETrainer,
    sae: SAE,
    *,
    window: list[dict[str, float]],
    wall_s: float,
    tokens_this_run: int,
    elapsed_s: float,
    evaluation: dict[str, Any] | None = None,
    command: str | None = None,
    finished: bool = True,
) -> dict[str, Any]:
    """The card's content. ``window``: the statistics of the last training steps (averaged into
    ``train_*``); ``evaluation``: held-out metrics, whose L0/FVU/dead fraction/CE figures are the
    card's headline numbers when given."""
    cfg = trainer.cfg
    ev = dict(evaluation or {})
    card: dict[str, Any] = {
        "model_name": cfg.model_name,
        "hook_name": cfg.hook_name,
        "architecture": cfg.architecture,
        "saved_architecture": sae.cfg.architecture,
        "k": cfg.k if cfg.architecture in K_ARCHITECTURES else None,
        "d_in": trainer.d_in,
        "d_sae": trainer.d_sae,
        "tokens_seen": trainer.tokens_seen,
        "steps": trainer.step_count,
        "finished": finished,
        "l0": ev.get("l0"),
        "fvu": ev.get("fvu"),
        "dead_fraction": ev.get("dead_fraction"),
        "ce_loss_recovered": ev.get("ce_loss_recovered"),
        "ce_clean": ev.get("ce_clean"),
        "ce_spliced": ev.get("ce_spliced"),
        "ce_zero_ablated": ev.get("ce_zero_ablated"),
        "eval_tokens": ev.get("eval_tokens"),
        # a feature of density p fires on none of N held-out tokens with probability (1-p)^N: the held-out
        # dead fraction cannot tell dead features from ones rarer than about 1/N
        "dead_fraction_resolution": (1.0 / ev["eval_tokens"]) if ev.get("eval_tokens") else None,
        "train_l0": _mean(window, "l0"),
        "train_fvu": _mean(window, "fvu"),
        "train_auxk": _mean(window, "auxk"),
        "train_dead_fraction_window": trainer.dead_fraction(),
        "dead_window_tokens": cfg.dead_window(),
        "wall_time_s": round(elapsed_s, 3),
        "wall_time_this_run_s": round(wall_s, 3),
        "tokens_per_s": (round(tokens_this_run / wall_s, 1) if tokens_this_run > 0 and wall_s > 0
                         else round(trainer.tokens_seen / elapsed_s, 1) if elapsed_s > 0 else None),
        "input_scale": trainer.scale,
        "command": command,
        "config": cfg.to_dict(),
    }
    if cfg.architecture in ("batchtopk", "matryoshka"):
        card["batchtopk_threshold"] = sae.cfg.metadata.get("batchtopk_threshold")
        card["batchtopk_threshold_rule"] = (
            "dictionary_learning: EMA (beta=threshold_beta) of the smallest kept activation per batch")
    for k, v in ev.items():
        card.setdefault(k, v)
    return card


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_card(folder: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Write ``training_card.json`` and ``README.md`` into ``folder``; returns the json path."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CARD_FILE
    path.write_text(json.dumps(card, indent=1, default=str))
    lines = [
        f"# SAE for {card.get('model_name') or 'a model'} at `{card.get('hook_name') or '?'}`",
        "",
        f"Trained with `saesteer.train`: {card['architecture']} SAE (saved as {card['saved_architecture']}), "
        f"d_in={card['d_in']}, d_sae={card['d_sae']}"
        + (f", k={card['k']}" if card.get("k") else "")
        + f", on {card['tokens_seen']:,} tokens ({card['steps']:,} steps).",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    rows = (("l0", "L0 (held-out)"), ("fvu", "FVU (held-out)"), ("dead_fraction", "dead fraction (held-out)"),
            ("ce_loss_recovered", "CE-loss recovered"), ("ce_clean", "CE clean"),
            ("ce_spliced", "CE with SAE spliced in"), ("ce_zero_ablated", "CE zero-ablated"),
            ("train_l0", "L0 (last training steps)"), ("train_fvu", "FVU (last training steps)"),
            ("train_dead_fraction_window", "dead fraction (training window)"),
            ("wall_time_s", "wall time (s)"), ("tokens_per_s", "tokens/s (this run)"))
    for key, label in rows:
        if key == "dead_fraction" and card.get("eval_tokens"):
            label = (f"dead fraction (held-out: fired on none of {card['eval_tokens']:,} tokens, so features rarer "
                     f"than 1 in {card['eval_tokens']:,} count as dead; compare the training window below)")
        lines.append(f"| {label} | {_fmt(card.get(key))} |")
    lines += ["", "Load it with `saesteer.load_sae(folder)` or `sae_lens.SAE.load_from_disk(folder)`.", ""]
    if card.get("command"):
        lines += ["Command:", "", "```", str(card["command"]), "```", ""]
    lines += ["Full config and figures: `training_card.json`.", ""]
    (out / README_FILE).write_text("\n".join(lines))
    return path
