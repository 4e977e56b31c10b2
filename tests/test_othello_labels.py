"""Othello board-state labels (SEED_METHODS §1) on hand-worked positions and on passes."""

import numpy as np
import pytest

from saesteer.testbeds.othello.dataset import moves_from_text
from saesteer.testbeds.othello.game import random_games, replay_batch, square_name
from saesteer.testbeds.othello.labels import (
    all_bsps,
    board_state,
    legal_moves,
    mine_theirs,
    mine_theirs_blank_masked,
)


def squares(plane: np.ndarray) -> list[str]:
    return sorted(square_name(int(i)) for i in np.nonzero(plane.reshape(64))[0])


@pytest.fixture
def f5_f4():
    # black f5 flips e5; white f4 flips e4 (worked by hand on the board)
    return np.array([moves_from_text("f5 f4") + [-1] * 58])


def test_mine_theirs_hand_position(f5_f4):
    lab = mine_theirs(f5_f4)
    assert lab.classes == ("theirs", "blank", "mine") and lab.values.shape == (1, 60, 8, 8, 3)
    # after move 0 (black's f5) "mine" is black
    assert squares(lab.values[0, 0, ..., 2]) == ["d5", "e4", "e5", "f5"]
    assert squares(lab.values[0, 0, ..., 0]) == ["d4"]
    # after move 1 (white's f4) the board is flipped: "mine" is white
    assert squares(lab.values[0, 1, ..., 2]) == ["d4", "e4", "f4"]
    assert squares(lab.values[0, 1, ..., 0]) == ["d5", "e5", "f5"]
    assert lab.values[0, 1, ..., 1].sum() == 58
    assert lab.valid[0].tolist() == [True, True] + [False] * 58 and not lab.values[0, 2:].any()
    assert lab.flat().shape == (2, 64, 3)


def test_absolute_board_and_legal_moves_hand_position(f5_f4):
    b = board_state(f5_f4)
    assert squares(b.values[0, 1, ..., 2]) == ["d5", "e5", "f5"]  # black
    assert squares(b.values[0, 1, ..., 0]) == ["d4", "e4", "f4"]  # white
    lm = legal_moves(f5_f4)
    assert lm.values.shape == (1, 60, 8, 8, 1)
    assert squares(lm.values[0, 0, ..., 0]) == ["d6", "f4", "f6"]  # white's replies to f5
    assert squares(lm.values[0, 1, ..., 0]) == ["c3", "d3", "e3", "f3", "g3"]  # black after f4
    masked = mine_theirs_blank_masked(f5_f4)
    assert masked.scored == (0, 2) and np.array_equal(masked.values, mine_theirs(f5_f4).values)
    assert set(all_bsps(f5_f4)) == {"mine_theirs", "mine_theirs_blank_masked", "legal_moves"}


def test_parity_flip_ignores_passes_mover_flip_does_not():
    g = random_games(400, seed=3)
    mover = replay_batch(g)["mover"]
    passed = (mover[:, 1:] == mover[:, :-1]) & (g[:, 1:] >= 0)
    i = int(np.nonzero(passed.any(1))[0][0])
    t = int(np.nonzero(passed[i])[0][0]) + 1  # the first move played right after a pass
    par, mov = mine_theirs(g[i : i + 1]), mine_theirs(g[i : i + 1], flip_by="mover")
    assert np.array_equal(par.values[0, :t], mov.values[0, :t])  # same until the pass
    # after one pass, parity's "mine" is the actual mover's "theirs"
    assert np.array_equal(par.values[0, t, ..., 2], mov.values[0, t, ..., 0])
    assert np.array_equal(par.values[0, t, ..., 0], mov.values[0, t, ..., 2])
    with pytest.raises(ValueError):
        mine_theirs(g[:1], flip_by="colour")
