"""Othello engine: perft counts, hand-checked flips and passes, batched vs scalar agreement."""

import numpy as np
import pytest

from saesteer.testbeds.othello.game import (
    BLACK,
    WHITE,
    Position,
    bits,
    from_grid,
    perft,
    random_games,
    replay,
    replay_batch,
    square_index,
    square_name,
)


@pytest.mark.parametrize("depth,count", [(1, 4), (2, 12), (3, 56), (4, 244), (5, 1396)])
def test_perft_from_opening(depth, count):
    assert perft(Position(), depth) == count


def test_opening_moves_and_names():
    p = Position()
    assert p.side == BLACK
    assert sorted(square_name(m) for m in p.legal_moves()) == ["c4", "d3", "e6", "f5"]
    assert all(square_index(square_name(s)) == s for s in range(64))
    # othello_world's opening: state[3,4] = state[4,3] = +1 (black), state[3,3] = state[4,4] = -1
    g = p.grid()
    assert g[3, 4] == g[4, 3] == 1 and g[3, 3] == g[4, 4] == -1 and np.abs(g).sum() == 4


def test_flips_in_several_directions():
    # black plays d4 (row d, col 4): east run d5 capped by d6, south run e4 capped by f4,
    # south-east run e5,f6 capped by g7; c4 (north) and c3 (north-west) are not capped.
    p = from_grid(
        [
            "........",
            "........",
            "..OO....",
            "....OX..",
            "...OO...",
            "...X.O..",
            "......X.",
            "........",
        ],
        side=BLACK,
    )
    d4 = square_index("d4")
    assert d4 in p.legal_moves()
    q = p.play(d4)
    flipped = sorted(square_name(s) for s in bits(q.black & p.white))
    assert flipped == ["d5", "e4", "e5", "f6"]
    assert sorted(square_name(s) for s in bits(q.white)) == ["c3", "c4"]
    assert q.side == WHITE
    with pytest.raises(ValueError):
        p.play(square_index("a1"))  # no flank: illegal


def test_forced_pass_then_game_over():
    # white (to move) has no move: its only disc a2 cannot flank a1 against the edge.
    p = from_grid(["XO......"] + ["........"] * 7, side=WHITE)
    assert p.legal() == 0
    r = p.resolved()
    assert r is not None and r.side == BLACK
    assert [square_name(s) for s in r.legal_moves()] == ["a3"]
    end = r.play(square_index("a3"))
    assert end.white == 0 and end.resolved() is None  # neither side can move


def test_random_games_are_legal_and_complete():
    g = random_games(300, seed=3)
    assert g.shape == (300, 60) and g.dtype == np.int8
    assert np.array_equal(g, random_games(300, seed=3))
    assert not np.array_equal(g, random_games(300, seed=4))
    lengths = (g >= 0).sum(1)
    assert lengths.max() == 60 and lengths.mean() > 55
    rb = replay_batch(g)
    passes = 0
    for i in range(300):
        ps = replay(g[i])
        assert len(ps) == lengths[i]
        assert ps[-1].resolved() is None  # each game ends only when neither side can move
        for t, q in enumerate(ps):
            assert q.black == int(rb["black"][i, t]) and q.white == int(rb["white"][i, t])
            nxt = q.resolved()
            assert int(rb["legal"][i, t]) == (nxt.legal() if nxt else 0)
            if t + 1 < len(ps):
                assert rb["mover"][i, t + 1] == rb["next_side"][i, t] == nxt.side
                passes += int(rb["mover"][i, t + 1] == rb["mover"][i, t])
    assert passes > 0  # some of these games contain a forced pass, and it was replayed
