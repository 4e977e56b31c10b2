"""Train the Othello testbed model on CPU, deterministically, and record its legal-move rate.

    python3 -m saesteer.testbeds.othello.train --out saesteer/testbeds/othello/model

rebuilds the shipped model: fixed seeds, one CPU thread, a fixed number of steps (the time
budget only stops a run early, and the metrics then say so, since such a run is not the
deterministic rebuild). It writes ``config.json`` + ``model.safetensors``, the tokenizer files and
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


def batches(batch: int):
    """Endless training batches (tokens (batch, 60), soft targets (batch, 60, 62), live mask
    (batch, 60)) from shards of `SHARD_GAMES` fresh games; deterministic."""
    shard = 0
    while True:
        games = train_games(SHARD_GAMES, shard=shard)
        for i in range(0, SHARD_GAMES - batch + 1, batch):
            g = games[i : i + batch]
            legal, live = legal_next_tokens(g)
            tgt = legal / np.maximum(legal.sum(-1, keepdims=True), 1)
            yield (
                torch.from_numpy(encode(g)[:, :60]),
                torch.from_numpy(tgt.astype(np.float32)),
                torch.from_numpy(live),
            )
        shard += 1


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
) -> dict:
    """Train a fresh model for ``steps`` steps of ``batch`` games, save it into ``out`` and return
    the metrics dict. Costs about 0.8 s per step of 128 games for the default size on one busy
    CPU core; the held-out evaluation at the end takes a few seconds."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = make_config(n_layer, d_model, n_head)
    model = make_model(config, seed=seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98)
    )
    small_eval = heldout_games(500)
    t0 = time.time()
    done, stopped_by_time = 0, False
    data = batches(batch)
    model.train()
    for step in range(steps):
        if (time.time() - t0) / 60 > max_minutes:
            stopped_by_time = True
            break
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
        done = step + 1
        if step % 50 == 0:
            log(f"step {step} loss {loss.item():.4f} lr {lr_at(step, steps, lr, warmup):.2e} {time.time() - t0:.0f}s")
        if eval_every and done % eval_every == 0:
            model.eval()
            log(f"step {done} held-out legal-move rate (500 games) {legal_move_rate(model, small_eval):.4f}")
            model.train()
    train_s = time.time() - t0
    model.eval()
    held = heldout_games(eval_games)
    metrics = {
        "legal_move_rate": legal_move_rate(model, held),
        "legal_move_rate_eval_games": eval_games,
        "legal_move_rate_200": legal_move_rate(model, held[:200]),
        "heldout": "dataset.heldout_games(n): seed HELDOUT_SEED, the first n games",
        "definition": "top-1 next token is a legal move, averaged over all positions with a next move",
        "steps": done,
        "steps_requested": steps,
        "stopped_by_time_budget": stopped_by_time,
        "batch_games": batch,
        "train_games": done * batch,
        "train_seconds": round(train_s, 1),
        "threads": torch.get_num_threads(),
        "lr": lr,
        "warmup": warmup,
        "n_layer": n_layer,
        "d_model": d_model,
        "n_head": n_head,
        "n_params": sum(p.numel() for p in model.parameters()),
        "seed": seed,
        "objective": "cross-entropy against the uniform distribution over legal next moves",
        "torch": torch.__version__,
    }
    model.save_pretrained(str(out))
    save_tokenizer(out)
    metrics["size_bytes"] = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log(json.dumps(metrics))
    return metrics


def main(argv: Optional[list[str]] = None) -> None:
    """The command line: ``--out DIR`` plus optional sizes, steps and time budget."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    train(
        a.out, steps=a.steps, batch=a.batch, lr=a.lr, n_layer=a.layers, d_model=a.d_model, n_head=a.heads,
        max_minutes=a.max_minutes, eval_every=a.eval_every, seed=a.seed, log=lambda s: print(s, flush=True),
    )


if __name__ == "__main__":
    main()
