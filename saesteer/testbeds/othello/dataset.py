"""Random Othello games as token sequences, OthelloGPT style, with fixed seeded splits.

Vocabulary (62 tokens), documented here once:

====================  =========================================================================
token id              meaning
====================  =========================================================================
0                     ``<pad>``: after the game's last move (OthelloGPT also uses 0 for pad)
1 .. 60               the 60 playable squares in ascending square order, skipping the centre
                      squares d4 d5 e4 e5 (27, 28, 35, 36): OthelloGPT's ``stoi``, so square 0
                      (a1) is token 1, square 26 is token 27, square 29 is token 28, square 63 is
                      token 60
61                    ``<bos>``: the first token of every sequence
====================  =========================================================================

A game of L moves is ``[<bos>, m_0, ..., m_{L-1}]`` padded with ``<pad>`` to 61 tokens. Passes are
implicit, as in OthelloGPT: a pass adds no token, the player who can move simply moves again.
The model reads tokens 0..59 and predicts tokens 1..60, so the output at input position ``i``
predicts move ``m_i``; input position ``i >= 1`` is the position right after move ``m_{i-1}``, and
position 0 (``<bos>``) is the opening.

Splits: training games come from `train_games` (seeds ``TRAIN_SEED + k``), held-out games from
`heldout_games` (``HELDOUT_SEED``); both are uniformly random legal games from `game.random_games`.
The seeds differ, so the sets are independent draws (a short game can occur in both by chance).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .game import CENTER, Position, random_games, replay_batch, unpack

PAD, BOS = 0, 61
VOCAB_SIZE = 62
SEQ_LEN = 61  # <bos> + up to 60 moves
TRAIN_SEED = 1_000
HELDOUT_SEED = 424_242

PLAYABLE = np.array([s for s in range(64) if s not in CENTER], dtype=np.int64)
SQUARE_TO_TOKEN = np.full(64, -1, dtype=np.int64)
SQUARE_TO_TOKEN[PLAYABLE] = np.arange(1, 61)
TOKEN_TO_SQUARE = np.full(VOCAB_SIZE, -1, dtype=np.int64)
TOKEN_TO_SQUARE[1:61] = PLAYABLE


def encode(moves: np.ndarray) -> np.ndarray:
    """Games (int array (n, 60) of squares, -1 padding) -> tokens (n, 61) int64: ``<bos>``,
    one token per move, ``<pad>`` after. Raises ValueError on a centre square."""
    moves = np.asarray(moves, dtype=np.int64)
    if moves.ndim == 1:
        moves = moves[None]
    tok = np.where(moves >= 0, SQUARE_TO_TOKEN[np.maximum(moves, 0)], PAD)
    if np.any((moves >= 0) & (tok < 0)):
        raise ValueError("a move on a centre square cannot be tokenised")
    out = np.full((moves.shape[0], SEQ_LEN), PAD, dtype=np.int64)
    out[:, 0] = BOS
    out[:, 1 : 1 + moves.shape[1]] = tok
    return out


def decode(tokens: np.ndarray) -> np.ndarray:
    """Tokens (n, T) -> squares (n, T) with -1 for ``<pad>``/``<bos>``; the inverse of `encode`
    once the ``<bos>`` column is dropped."""
    return TOKEN_TO_SQUARE[np.asarray(tokens, dtype=np.int64)]


def train_games(n: int, shard: int = 0) -> np.ndarray:
    """``n`` training games from seed ``TRAIN_SEED + shard`` (int8 (n, 60)); ~30 ms per 1000."""
    return random_games(n, seed=TRAIN_SEED + shard)


def heldout_games(n: int) -> np.ndarray:
    """The fixed held-out set's first ``n`` games (seed ``HELDOUT_SEED``); a smaller ``n`` gives a
    prefix of a larger one, so every evaluation size sees the same games."""
    return random_games(n, seed=HELDOUT_SEED)


def legal_next_tokens(moves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each model input position (n, 60): a bool (n, 60, 62) mask of the tokens that are legal
    next moves, and a bool (n, 60) mask of the positions that have a next move at all (the game is
    not over there). Position 0 is the opening; position i >= 1 is after move i-1. Costs one
    `replay_batch`."""
    moves = np.asarray(moves)
    n = moves.shape[0]
    rb = replay_batch(moves[:, :59])
    legal_sq = np.zeros((n, 60, 64), dtype=bool)
    legal_sq[:, 0] = unpack(np.array([Position().legal()], dtype=np.uint64))[0]  # the opening
    legal_sq[:, 1:] = unpack(rb["legal"])
    played = np.zeros((n, 60), dtype=bool)
    played[:, 0] = True
    played[:, 1:] = moves[:, :59] >= 0
    legal_sq &= played[..., None]
    tok = np.zeros((n, 60, VOCAB_SIZE), dtype=bool)
    tok[..., 1:61] = legal_sq[..., PLAYABLE]
    return tok, tok.any(-1)


def make_tokenizer():
    """A `transformers.PreTrainedTokenizerFast` over the vocabulary above: whitespace-separated
    square names ("f5 d6 c3"), ``<bos>`` added in front, ``<pad>`` for padding. Builds in
    milliseconds; nothing is downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from .game import square_name

    vocab = {"<pad>": PAD, "<bos>": BOS}
    for sq in PLAYABLE:
        vocab[square_name(int(sq))] = int(SQUARE_TO_TOKEN[sq])
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", pad_token="<pad>", unk_token="<pad>", eos_token="<pad>"
    )


def save_tokenizer(out: str | Path) -> None:
    """Write the tokenizer files (``tokenizer.json`` and config, a few kB) into ``out``."""
    make_tokenizer().save_pretrained(str(out))


def moves_from_text(text: str) -> list[int]:
    """"f5 d6 c3" -> squares [44, 29, 18] (names as in `game.square_name`)."""
    from .game import square_index

    return [square_index(w) for w in text.split()]


def text_from_moves(moves: Optional[np.ndarray]) -> str:
    """Squares -> "f5 d6 c3" (stops at the first -1)."""
    from .game import square_name

    out = []
    for s in np.asarray(moves).tolist():
        if s < 0:
            break
        out.append(square_name(int(s)))
    return " ".join(out)
