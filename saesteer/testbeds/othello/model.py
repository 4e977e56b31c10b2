"""The OthelloGPT-style testbed model: a small `transformers.GPT2LMHeadModel` over move tokens.

The model is a plain Hugging Face causal LM (no custom code), so everything in saesteer that
wraps HF models works on it unchanged; the residual stream after block ``l`` is
``hidden_states[l + 1]`` of a forward pass with ``output_hidden_states=True``.

`load_model()` loads the copy shipped under ``model/`` (a few MB, CPU, milliseconds);
`legal_move_rate` is the figure recorded beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .dataset import BOS, PAD, SEQ_LEN, VOCAB_SIZE, encode, legal_next_tokens

SHIPPED = Path(__file__).parent / "model"


def make_config(n_layer: int = 4, d_model: int = 192, n_head: int = 4):
    """A `GPT2Config` for the testbed: vocabulary and positions from `dataset`, no dropout."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=SEQ_LEN,
        n_embd=d_model,
        n_layer=n_layer,
        n_head=n_head,
        n_inner=4 * d_model,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=BOS,
        eos_token_id=PAD,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )


def make_model(config=None, seed: int = 0):
    """A freshly initialised `GPT2LMHeadModel` (seeded), fp32 on CPU."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(config or make_config())


def load_model(path: Optional[str | Path] = None):
    """Load a saved testbed model (default: the shipped one) in eval mode, fp32 on CPU.
    Raises FileNotFoundError with the rebuild command when the files are missing."""
    from transformers import GPT2LMHeadModel

    path = Path(path) if path is not None else SHIPPED
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no Othello testbed model at {path}; rebuild it with "
            f"`python3 -m saesteer.testbeds.othello.train --out {path}`"
        )
    model = GPT2LMHeadModel.from_pretrained(str(path), dtype=torch.float32)
    return model.eval()


def load_metrics(path: Optional[str | Path] = None) -> dict:
    """The ``metrics.json`` written beside a trained model (legal-move rate, training time, ...)."""
    path = Path(path) if path is not None else SHIPPED
    return json.loads((path / "metrics.json").read_text())


@torch.no_grad()
def legal_move_rate(model, moves: np.ndarray, batch: int = 500) -> float:
    """Fraction of positions where the model's top-1 next token is a legal move, over every
    position of the given games that has a next move (the opening included, positions after the
    game's end excluded). ``moves``: int (n, 60) squares, -1 padding. Costs one forward pass per
    ``batch`` games (about 0.1 s per 100 games for the default model on one core)."""
    legal, live = legal_next_tokens(moves)
    tokens = torch.from_numpy(encode(moves)[:, :60])
    hits = total = 0
    for i in range(0, len(tokens), batch):
        x = tokens[i : i + batch]
        logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits
        top = logits.argmax(-1).numpy()
        lg, lv = legal[i : i + batch], live[i : i + batch]
        ok = np.take_along_axis(lg, top[..., None], axis=-1)[..., 0]
        hits += int((ok & lv).sum())
        total += int(lv.sum())
    return hits / total


@torch.no_grad()
def residual_stream(model, moves: np.ndarray, batch: int = 250) -> torch.Tensor:
    """Residual stream at every layer: float tensor (n_layer + 1, n, 60, d_model), entry [l, g, t]
    the output of block l (l = 0: the embeddings) at the position right after move t of game g,
    i.e. aligned with `labels` (input position t + 1). Positions past a game's end hold the pad
    token's state; mask them with ``moves >= 0``. Costs one forward pass per ``batch`` games."""
    tokens = torch.from_numpy(encode(moves))  # (n, 61): <bos> m_0 .. m_59
    outs = []
    for i in range(0, len(tokens), batch):
        x = tokens[i : i + batch]
        hs = model(input_ids=x, attention_mask=torch.ones_like(x), output_hidden_states=True).hidden_states
        outs.append(torch.stack([h[:, 1:] for h in hs]))
    return torch.cat(outs, dim=1)
