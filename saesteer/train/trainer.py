"""``train_sae``: the training loop around :class:`~saesteer.train.step.SAETrainer`: batching, epochs,
progress bar, checkpoints and resume, and the final SAELens folder with its training card.

>>> src = ActivationSource(model, "blocks.6.hook_resid_post", texts, tokenizer=tok)
>>> sae = train_sae(src, TrainConfig(k=32, total_tokens=2_000_000), "out/sae")

Resume is exact: the checkpoint holds the parameters, Adam moments, counters and the data position
(epoch and batch within it), and the learning rate is a function of the step. A resumed run re-reads
its source up to the saved position (for an :class:`ActivationSource` that re-runs the model on
those batches; a :class:`CachedActivations` only re-reads its shards).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from saesteer.sae.module import SAE
from saesteer.train import distributed
from saesteer.train.activations import rebatch
from saesteer.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from saesteer.train.config import TrainConfig
from saesteer.train.step import SAETrainer

CHECKPOINT_DIR = "checkpoint"
LOG_FILE = "train_log.jsonl"


def _epoch_blocks(source: Any, epoch: int) -> Iterator[torch.Tensor] | None:
    """The blocks of epoch ``epoch``; None when the source cannot be iterated again."""
    if hasattr(source, "iter_epoch"):
        return iter(source.iter_epoch(epoch))
    it = iter(source)
    if it is source and epoch > 0:  # a one-shot iterator: one epoch only
        return None
    return it


def _with_names(cfg: TrainConfig, source: Any) -> TrainConfig:
    hook = cfg.hook_name or getattr(source, "hook", None)
    model = cfg.model_name or getattr(source, "model_name", None)
    return dataclasses.replace(cfg, hook_name=hook, model_name=model)


def train_sae(
    source: Iterable[torch.Tensor],
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    max_steps: int | None = None,
    evaluate: Callable[[SAE], dict[str, Any]] | None = None,
    command: str | None = None,
    progress: bool = True,
) -> SAE:
    """Train an SAE on the activation blocks of ``source`` and write it to ``out_dir``.

    ``source``: an iterable of float ``[n, d_in]`` blocks (an :class:`ActivationSource`, a
    :class:`CachedActivations`, or any list/iterable of tensors); sources with ``iter_epoch(e)`` (or
    re-iterable ones) are read again for further epochs until ``cfg.total_tokens``. ``resume``:
    continue from ``out_dir/checkpoint`` when one exists. ``max_steps``: stop (with a checkpoint)
    after that many steps in this call. ``evaluate(sae)``: extra metrics for the card (e.g.
    :func:`saesteer.train.metrics.evaluate_sae` on held-out text).

    Writes ``cfg.json`` + ``sae_weights.safetensors`` (SAELens format), ``training_card.json`` and
    ``README.md``, ``train_log.jsonl`` and ``checkpoint/``. Cost: ``cfg.steps`` trainer steps plus
    reading the source; memory: the SAE, its Adam moments and one batch.

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE > 1``) this is data-parallel training
    (:mod:`saesteer.train.distributed`): every rank reads the same source, cuts the same global batches
    of ``cfg.batch_tokens`` and trains on its slice; rank 0 writes every file. Every rank runs the
    source in full (an :class:`ActivationSource` repeats the model forward on each rank): cache the
    activations first (``saesteer train --cache``) and train from the cache.
    """
    from tqdm.auto import tqdm

    from saesteer.sae.formats import save_sae
    from saesteer.train.card import training_card, write_card

    distributed.init_from_env(cfg.device)
    cfg = dataclasses.replace(_with_names(cfg, source), device=distributed.local_device(cfg.device))
    main = distributed.is_main()
    progress = progress and main
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ck = out / CHECKPOINT_DIR
    trainer: SAETrainer | None = None
    epoch = skip = 0
    elapsed = 0.0
    if resume and has_checkpoint(ck):
        trainer, state = load_checkpoint(ck, cfg)
        epoch, skip, elapsed = int(state["epoch"]), int(state["batch_in_epoch"]), float(state["elapsed_s"])
    elif not resume and main:
        (out / LOG_FILE).unlink(missing_ok=True)
    steps = cfg.steps
    start_tokens = trainer.tokens_seen if trainer else 0
    window: deque[dict[str, float]] = deque(maxlen=max(1, min(100, steps // 10)))
    desc = f"train {cfg.architecture}"
    buffer = int(getattr(source, "buffer_tokens", 0) or 0)
    # before the first step the source reads activations and fills its shuffle buffer (minutes on a CPU):
    # say so, instead of a bar standing still at 0
    waiting = (f"{desc}: reading activations into the {buffer:,}-token shuffle buffer before the first step"
               if buffer else f"{desc}: reading the first batch of activations")
    bar = tqdm(total=steps * cfg.batch_tokens, initial=start_tokens, unit="tok", unit_scale=True,
               disable=not progress, desc=waiting, dynamic_ncols=True)
    t0 = time.perf_counter()
    done_here = 0
    pos = {"epoch": epoch, "batch_in_epoch": skip}

    def checkpoint() -> None:
        assert trainer is not None
        if main:
            save_checkpoint(trainer, ck, {**pos, "elapsed_s": elapsed + time.perf_counter() - t0})

    stop = False
    with open(out / LOG_FILE if main else os.devnull, "a") as log:
        while not stop and (trainer is None or trainer.step_count < steps):
            blocks = _epoch_blocks(source, epoch)
            if blocks is None:
                break
            produced = 0
            for b, x in enumerate(rebatch(blocks, cfg.batch_tokens)):
                if b < skip:
                    continue
                produced += 1
                if trainer is None:
                    trainer = SAETrainer(cfg, x.shape[1] - cfg.n_concepts)  # G-SAE rows end in labels
                elif x.shape[1] != trainer.d_in + cfg.n_concepts:
                    raise ValueError(f"activations are {x.shape[1]} wide; this SAE (or its checkpoint) "
                                     f"reads {trainer.d_in} (+ {cfg.n_concepts} concept labels)")
                stats = trainer.step(distributed.shard(x))
                if not math.isfinite(stats["loss"]):
                    bar.close()
                    raise FloatingPointError(
                        f"{cfg.architecture}: the loss is {stats['loss']} at step {trainer.step_count} (training "
                        f"diverged); nothing of this step was saved"
                        f"{' (the last checkpoint in ' + str(ck) + ' is intact)' if has_checkpoint(ck) else ''}: "
                        f"lower the learning rate or the sparsity coefficient")
                if done_here == 0:
                    bar.set_description(desc, refresh=False)
                done_here += 1
                window.append(stats)
                pos = {"epoch": epoch, "batch_in_epoch": b + 1}
                bar.update(x.shape[0])
                if cfg.log_every and trainer.step_count % cfg.log_every == 0:
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", fvu=f"{stats['fvu']:.4f}",
                                    l0=f"{stats['l0']:.1f}", dead=f"{stats['dead']:.3f}", refresh=False)
                    log.write(json.dumps({"step": trainer.step_count, "tokens": trainer.tokens_seen, **stats}) + "\n")
                if cfg.checkpoint_every and trainer.step_count % cfg.checkpoint_every == 0:
                    checkpoint()
                if trainer.step_count >= steps or (max_steps is not None and done_here >= max_steps):
                    stop = True
                    break
            else:
                if produced == 0 and skip == 0:
                    break  # the source has nothing (more) to give
                epoch, skip = epoch + 1, 0
                pos = {"epoch": epoch, "batch_in_epoch": 0}
    bar.close()
    if trainer is None:
        raise ValueError("the activation source gave no full batch; lower batch_tokens or give more text")
    wall = time.perf_counter() - t0
    checkpoint()
    sae = trainer.to_sae()
    if not main:  # rank 0 writes the folder; the others return the same SAE
        distributed.barrier()
        return sae
    save_sae(sae, out)
    finished = trainer.step_count >= steps
    if trainer.step_count < steps and (max_steps is None or done_here < max_steps):
        import warnings

        warnings.warn(f"the activation source ran out after {trainer.tokens_seen} tokens "
                      f"({trainer.step_count} of {steps} steps)", stacklevel=2)
        finished = True
    extra = evaluate(sae) if evaluate is not None and finished else {}
    card = training_card(trainer, sae, window=list(window), wall_s=wall,
                         tokens_this_run=trainer.tokens_seen - start_tokens,
                         elapsed_s=elapsed + wall, evaluation=extra, command=command, finished=finished)
    write_card(out, card)
    distributed.barrier()
    return sae
