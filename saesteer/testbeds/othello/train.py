"""Train the Othello testbed model on CPU, deterministically, and record its legal-move rate.

    python3 -m saesteer.testbeds.othello.train --out saesteer/testbeds/othello/model

rebuilds the shipped model: fixed seeds, one CPU thread, a fixed number of steps. The time
budget (``--max-minutes``) only pauses a run: it saves ``checkpoint.pt`` in ``--out``, and the
same command run again resumes there and ends with the same weights as one uninterrupted run.
At the end it writes ``config.json`` + ``model.safetensors``, the tokenizer files and
``metrics.json`` (held-out legal-move rate, steps, wall time, sizes) into ``--out``.

Objective. Games are uniformly random legal play, so the true next-move distribution at every
position is uniform over the legal moves, which the engine knows exactly. The loss is the
cross-entropy against that distribution: the expectation of the usual next-token loss over the
sampled move, not a one-sample estimate of it. It has the same minimiser as next-token training
on these games and a much smaller variance, which is what makes a CPU budget enough.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .dataset import encode, heldout_games, legal_next_tokens, save_tokenizer, train_games
from .model import legal_move_rate, make_config, make_model

SHARD_GAMES = 8192


def batches(batch: int, start_step: int = 0):
    """Endless training batches (tokens (batch, 60), soft targets (batch, 60, 62), live mask
    (batch, 60)) from shards of `SHARD_GAMES` fresh games, starting at batch ``start_step``;
    batch k is a function of (k, batch) only, so a resumed run sees the same data."""
    per_shard = SHARD_GAMES // batch
    shard, first = divmod(start_step, per_shard)
    while True:
        games = train_games(SHARD_GAMES, shard=shard)
        for i in range(first, per_shard):
            g = games[i * batch : (i + 1) * batch]
            legal, live = legal_next_tokens(g)
            tgt = legal / np.maximum(legal.sum(-1, keepdims=True), 1)
            yield (
                torch.from_numpy(encode(g)[:, :60]),
                torch.from_numpy(tgt.astype(np.float32)),
                torch.from_numpy(live),
            )
        shard, first = shard + 1, 0


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 5 % of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def train(
    out: str | Path,
    steps: int = 1500,
    batch: int = 128,
    lr: float = 3e-3,
    warmup: int = 100,
    n_layer: int = 4,
    d_model: int = 128,
    n_head: int = 4,
    max_minutes: float = 25.0,
    eval_every: int = 250,
    eval_games: int = 2000,
    seed: int = 0,
    log=print,
    session_steps: Optional[int] = None,
) -> dict:
    """Train a model for ``steps`` steps of ``batch`` games, save it into ``out`` and return the
    metrics dict. When ``max_minutes`` (or ``session_steps`` steps, for tests) run out first, the
    run saves ``out/checkpoint.pt`` (weights, optimiser, step) and returns
    ``{"stopped_by_time_budget": True, ...}`` without a model; the same call again resumes from
    it and ends exactly where one uninterrupted run would (the data and the schedule depend only on
    the step). Costs about 0.8 s per step of 128 games for the default size on one busy CPU core;
    the held-out evaluation at the end takes a few seconds."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hparams = dict(steps=steps, batch=batch, lr=lr, warmup=warmup, n_layer=n_layer, d_model=d_model, n_head=n_head, seed=seed)
    config = make_config(n_layer, d_model, n_head)
    model = make_model(config, seed=seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98)
    )
    ckpt_path = out / "checkpoint.pt"
    done, before_s, sessions = 0, 0.0, 1
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=True)
        if ck["hparams"] != hparams:
            raise ValueError(f"{ckpt_path} was made with {ck['hparams']}, not {hparams}; delete it or match it")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        done, before_s, sessions = int(ck["step"]), float(ck["elapsed"]), int(ck["sessions"]) + 1
        log(f"resuming at step {done} (session {sessions})")
    small_eval = heldout_games(500)
    t0 = time.time()
    data = batches(batch, start_step=done)
    model.train()
    for step in range(done, steps):
        if (time.time() - t0) / 60 > max_minutes or (session_steps is not None and step - done >= session_steps):
            torch.save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "hparams": hparams,
                 "elapsed": before_s + time.time() - t0, "sessions": sessions},
                ckpt_path,
            )
            log(f"time budget reached at step {step}; saved {ckpt_path}, rerun the same command to resume")
            return {"stopped_by_time_budget": True, "steps": step, "steps_requested": steps, "checkpoint": str(ckpt_path)}
        tokens, tgt, live = next(data)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        logits = model(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits
        logp = torch.log_softmax(logits, dim=-1)
        loss = -((tgt * logp).sum(-1) * live).sum() / live.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            log(f"step {step} loss {loss.item():.4f} lr {lr_at(step, steps, lr, warmup):.2e} {time.time() - t0:.0f}s")
        if eval_every and (step + 1) % eval_every == 0:
            model.eval()
            log(f"step {step + 1} held-out legal-move rate (500 games) {legal_move_rate(model, small_eval):.4f}")
            model.train()
    train_s = before_s + time.time() - t0
    model.eval()
    held = heldout_games(eval_games)
    metrics = {
        "legal_move_rate": legal_move_rate(model, held),
        "legal_move_rate_eval_games": eval_games,
        "legal_move_rate_200": legal_move_rate(model, held[:200]),
        "heldout": "dataset.heldout_games(n): seed HELDOUT_SEED, the first n games",
        "definition": "top-1 next token is a legal move, averaged over all positions with a next move",
        "steps": steps,
        "stopped_by_time_budget": False,
        "sessions": sessions,
        "batch_games": batch,
        "train_games": steps * batch,
        "train_seconds": round(train_s, 1),
        "threads": torch.get_num_threads(),
        **{k: v for k, v in hparams.items() if k not in ("steps", "batch")},
        "n_params": sum(p.numel() for p in model.parameters()),
        "objective": "cross-entropy against the uniform distribution over legal next moves",
        "torch": torch.__version__,
    }
    model.save_pretrained(str(out))
    save_tokenizer(out)
    ckpt_path.unlink(missing_ok=True)
    metrics["size_bytes"] = sum(f.stat().st_size for f in out.iterdir() if f.is_file() and f.name != "metrics.json")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log(json.dumps(metrics))
    return metrics


def main(argv: Optional[list[str]] = None) -> None:
    """The command line: ``--out DIR`` plus optional sizes, steps and time budget."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog="exit status 75: paused by --max-minutes; rerun to resume"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--max-minutes", type=float, default=25.0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    m = train(
        a.out, steps=a.steps, batch=a.batch, lr=a.lr, n_layer=a.layers, d_model=a.d_model, n_head=a.heads,
        max_minutes=a.max_minutes, eval_every=a.eval_every, seed=a.seed, log=lambda s: print(s, flush=True),
    )
    if m["stopped_by_time_budget"]:
        raise SystemExit(75)  # paused (EX_TEMPFAIL): run the same command again to resume


if __name__ == "__main__":
    main()
