"""Board-state properties (BSPs) of Othello positions, as in Karvonen et al. (arXiv 2408.00113).

Every label array describes the position *after* move t of each game, shape (n, T, 8, 8, C), the
same positions as `model.residual_stream` (model input position t + 1). Rows are the square's
letter, columns its digit (``game.square_name``). Positions past a game's end are all-zero;
``valid`` in each `BoardLabels` says which positions are real.

The three Othello BSPs of the paper (SEED_METHODS §1), following SAE_BoardGameEval's
``circuits/othello_utils.py`` exactly:

* ``mine_theirs`` (``games_batch_to_state_stack_mine_yours_BLRRC``): classes {theirs, blank, mine}.
  The board (+1 black, -1 white, othello_world's convention) is multiplied by ``flip = +1`` when
  t is even and ``-1`` when t is odd, then one-hot as (-1, 0, +1). So "mine" is the player who
  made move t *by parity*: black after moves 0, 2, 4, ...; white after 1, 3, 5, .... This
  ignores passes, as the reference does: after a forced pass the parity player is not the one who
  actually moved. ``flip_by="mover"`` gives the variant where "mine" is the player who really
  made move t (not the paper's; offered for comparison).
* ``mine_theirs_blank_masked``: the same array with the blank class excluded from scoring
  (``scored = (0, 2)``), as the paper's "blank masked" variant; the array keeps all 3 channels.
* ``legal_moves`` (``games_batch_to_valid_moves_BLRRC``): one channel, 1 where the player who
  moves next (forced passes resolved, like othello_world's ``get_valid_moves``) may play.

``board_state`` (``games_batch_to_state_stack_BLRRC``, absolute colours {white, blank, black}) is
included for completeness. All functions cost one `game.replay_batch` plus array work: about
a second per 10k games.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .game import replay_batch, unpack


@dataclass
class BoardLabels:
    """One board-state property: ``values`` bool (n, T, 8, 8, C), ``valid`` bool (n, T) (the
    position exists), the class names, and the class indices that scoring counts."""

    name: str
    values: np.ndarray
    valid: np.ndarray
    classes: tuple[str, ...]
    scored: tuple[int, ...]

    def flat(self) -> np.ndarray:
        """The valid positions' labels as bool (N, 64, C), games and plies flattened in order."""
        n, T = self.valid.shape
        return self.values.reshape(n * T, 64, -1)[self.valid.reshape(-1)]


def _signed_boards(moves: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    moves = np.asarray(moves)
    rb = replay_batch(moves)
    valid = moves >= 0
    board = unpack(rb["black"]).astype(np.int8) - unpack(rb["white"]).astype(np.int8)  # (n, T, 64)
    return board, valid, rb


def _one_hot(board: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n, T = valid.shape
    out = np.stack([board == -1, board == 0, board == 1], axis=-1) & valid[..., None, None]
    return out.reshape(n, T, 8, 8, 3)


def board_state(moves: np.ndarray) -> BoardLabels:
    """Absolute colours: classes (white, blank, black) of every square after each move."""
    board, valid, _ = _signed_boards(moves)
    return BoardLabels("board_state", _one_hot(board, valid), valid, ("white", "blank", "black"), (0, 1, 2))


def mine_theirs(moves: np.ndarray, flip_by: Literal["parity", "mover"] = "parity") -> BoardLabels:
    """Classes (theirs, blank, mine) after each move t; "mine" is the player of move t by parity
    (the paper's definition, see the module docstring) or, with ``flip_by="mover"``, the player
    who actually made it."""
    board, valid, rb = _signed_boards(moves)
    n, T = valid.shape
    if flip_by == "parity":
        flip = np.where(np.arange(T) % 2 == 0, 1, -1).astype(np.int8)[None, :].repeat(n, 0)
    elif flip_by == "mover":
        flip = np.where(rb["mover"] == 1, -1, 1).astype(np.int8)
    else:
        raise ValueError(f"flip_by must be 'parity' or 'mover', not {flip_by!r}")
    vals = _one_hot(board * flip[..., None], valid)
    return BoardLabels("mine_theirs", vals, valid, ("theirs", "blank", "mine"), (0, 1, 2))


def mine_theirs_blank_masked(moves: np.ndarray) -> BoardLabels:
    """`mine_theirs` with the blank class left out of scoring (``scored = (0, 2)``)."""
    lab = mine_theirs(moves)
    return BoardLabels("mine_theirs_blank_masked", lab.values, lab.valid, lab.classes, (0, 2))


def legal_moves(moves: np.ndarray) -> BoardLabels:
    """One channel: the squares the next player (passes resolved) may play after each move."""
    moves = np.asarray(moves)
    rb = replay_batch(moves)
    valid = moves >= 0
    n, T = valid.shape
    vals = (unpack(rb["legal"]) & valid[..., None]).reshape(n, T, 8, 8, 1)
    return BoardLabels("legal_moves", vals, valid, ("legal",), (0,))


BSPS = {
    "mine_theirs": mine_theirs,
    "mine_theirs_blank_masked": mine_theirs_blank_masked,
    "legal_moves": legal_moves,
}


def all_bsps(moves: np.ndarray) -> dict[str, BoardLabels]:
    """The paper's three Othello BSPs for these games, by name."""
    return {k: f(moves) for k, f in BSPS.items()}
