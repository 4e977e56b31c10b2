"""8x8 Othello on bitboards: legal moves, flips, passes, and batched random games.

Squares are numbered ``sq = 8 * row + col`` (0..63) and named ``"abcdefgh"[row] + str(col + 1)``,
as in Li et al.'s othello_world (``permit``): the letter is the row. Bit ``sq`` of a bitboard is
set when that square holds the piece. The standard opening puts black on d5 (28) and e4 (35) and
white on d4 (27) and e5 (36); black moves first.

Rules: a move must flip at least one opposing disc along a row, column or diagonal. A player with
no legal move passes; the game ends when neither player can move.

Two implementations share one algorithm (Dumb7fill over the 8 directions): the scalar one works on
Python ints (a few microseconds per call; used for replay, tests and perft), the batched one on
``numpy.uint64`` arrays, one game per element (used to generate and replay many games at once:
100k random games take a few seconds on one core).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

FULL = (1 << 64) - 1
COL0 = 0x0101010101010101  # col 0 of every row
COL7 = COL0 << 7
START_BLACK = (1 << 28) | (1 << 35)
START_WHITE = (1 << 27) | (1 << 36)
CENTER = (27, 28, 35, 36)
BLACK, WHITE = 0, 1

# (shift, left?, mask applied after the shift): E, W, S, N, SE, SW, NE, NW
_DIRS = [
    (1, True, FULL & ~COL0),
    (1, False, FULL & ~COL7),
    (8, True, FULL),
    (8, False, FULL),
    (9, True, FULL & ~COL0),
    (7, True, FULL & ~COL7),
    (7, False, FULL & ~COL0),
    (9, False, FULL & ~COL7),
]
_NP_DIRS = [(np.uint64(s), left, np.uint64(m)) for s, left, m in _DIRS]


def square_name(sq: int) -> str:
    """Name of square ``sq`` (0..63), e.g. 0 -> "a1", 63 -> "h8" (letter = row)."""
    return "abcdefgh"[sq // 8] + str(sq % 8 + 1)


def square_index(name: str) -> int:
    """Inverse of `square_name`: "d5" -> 28."""
    return "abcdefgh".index(name[0].lower()) * 8 + int(name[1]) - 1


def _sh(x, d):
    s, left, m = d
    return ((x << s) if left else (x >> s)) & m


def legal_mask(me: int, opp: int) -> int:
    """Bitboard of the squares where the player with discs ``me`` may play (Python ints)."""
    empty = FULL & ~(me | opp)
    moves = 0
    for d in _DIRS:
        x = _sh(me, d) & opp
        for _ in range(5):
            x |= _sh(x, d) & opp
        moves |= _sh(x, d) & empty
    return moves


def flips_mask(me: int, opp: int, sq: int) -> int:
    """Bitboard of the opposing discs that playing ``sq`` flips (0 if the move is illegal)."""
    m = 1 << sq
    if (me | opp) & m:
        return 0
    f = 0
    for d in _DIRS:
        x = _sh(m, d) & opp
        for _ in range(5):
            x |= _sh(x, d) & opp
        if _sh(x, d) & me:
            f |= x
    return f


def bits(mask: int) -> list[int]:
    """The set squares of a bitboard, ascending."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


@dataclass(frozen=True)
class Position:
    """A board and the side to move (``BLACK`` = 0 or ``WHITE`` = 1). Immutable; cheap to copy."""

    black: int = START_BLACK
    white: int = START_WHITE
    side: int = BLACK

    @property
    def me(self) -> int:
        return self.black if self.side == BLACK else self.white

    @property
    def opp(self) -> int:
        return self.white if self.side == BLACK else self.black

    def legal(self) -> int:
        """Bitboard of the side to move's legal squares (0 means it must pass)."""
        return legal_mask(self.me, self.opp)

    def legal_moves(self) -> list[int]:
        """The side to move's legal squares, ascending."""
        return bits(self.legal())

    def passed(self) -> Position:
        """The same board with the other side to move (a pass)."""
        return Position(self.black, self.white, 1 - self.side)

    def resolved(self) -> Optional[Position]:
        """This position if the side to move can move, after a pass if only the other can,
        ``None`` if the game is over."""
        if self.legal():
            return self
        p = self.passed()
        return p if p.legal() else None

    def play(self, sq: int) -> Position:
        """Play ``sq`` for the side to move and hand the turn over (no pass resolution).
        Raises ValueError if the move is illegal."""
        f = flips_mask(self.me, self.opp, sq)
        if not f:
            raise ValueError(f"illegal move {square_name(sq)} for {'black' if self.side == BLACK else 'white'}")
        me, opp = self.me | f | (1 << sq), self.opp & ~f
        if self.side == BLACK:
            return Position(me, opp, WHITE)
        return Position(opp, me, BLACK)

    def grid(self) -> np.ndarray:
        """8x8 int8 array: +1 black, -1 white, 0 blank (othello_world's ``state`` convention)."""
        g = np.zeros(64, dtype=np.int8)
        g[bits(self.black)] = 1
        g[bits(self.white)] = -1
        return g.reshape(8, 8)

    def __str__(self) -> str:
        g = self.grid()
        rows = ["  " + " ".join(str(c + 1) for c in range(8))]
        for r in range(8):
            rows.append("abcdefgh"[r] + " " + " ".join({1: "X", -1: "O", 0: "."}[int(v)] for v in g[r]))
        return "\n".join(rows)


def from_grid(grid: Sequence[Sequence[str]] | Sequence[str], side: int = BLACK) -> Position:
    """Build a position from 8 strings of 8 chars: 'X' black, 'O' white, '.' blank."""
    black = white = 0
    for r, row in enumerate(grid):
        for c, ch in enumerate(row):
            if ch in "Xx":
                black |= 1 << (8 * r + c)
            elif ch in "Oo":
                white |= 1 << (8 * r + c)
    return Position(black, white, side)


def replay(moves: Iterable[int]) -> list[Position]:
    """Play a game from the opening; returns the position after each move. Its ``side`` is the
    player who actually moves next (forced passes resolved); once neither side can move it is
    the side by plain alternation and ``p.resolved() is None``. A move < 0 ends the list
    (padding). Raises ValueError on an illegal move or a move after the game ended. Costs a few
    microseconds per move."""
    p: Optional[Position] = Position()
    out: list[Position] = []
    for sq in moves:
        sq = int(sq)
        if sq < 0:
            break
        if p is None:
            raise ValueError("move after the game ended")
        q = p.play(sq)
        out.append(q.resolved() or q)
        p = q.resolved()
    return out


def perft(p: Position, depth: int) -> int:
    """Number of move sequences of ``depth`` plies from ``p`` (a forced pass counts as a ply;
    a finished game counts as one leaf). Costs O(branching**depth) scalar calls."""
    if depth == 0:
        return 1
    ms = p.legal_moves()
    if not ms:
        q = p.passed()
        return perft(q, depth - 1) if q.legal() else 1
    return sum(perft(p.play(m), depth - 1) for m in ms)


# ---------------------------------------------------------------- batched (numpy) implementation


def legal_mask_np(me: np.ndarray, opp: np.ndarray) -> np.ndarray:
    """`legal_mask` on uint64 arrays, element-wise."""
    empty = ~(me | opp)
    moves = np.zeros_like(me)
    for d in _NP_DIRS:
        x = _sh(me, d) & opp
        for _ in range(5):
            x |= _sh(x, d) & opp
        moves |= _sh(x, d) & empty
    return moves


def flips_mask_np(me: np.ndarray, opp: np.ndarray, move_bit: np.ndarray) -> np.ndarray:
    """`flips_mask` on uint64 arrays; ``move_bit`` holds ``1 << sq`` (0 for no move: no flips)."""
    f = np.zeros_like(me)
    zero = np.uint64(0)
    for d in _NP_DIRS:
        x = _sh(move_bit, d) & opp
        for _ in range(5):
            x |= _sh(x, d) & opp
        f |= np.where((_sh(x, d) & me) != zero, x, zero)
    return f


_POW = np.uint64(1) << np.arange(64, dtype=np.uint64)


def unpack(mask: np.ndarray) -> np.ndarray:
    """uint64 array of shape S -> bool array of shape S + (64,), one entry per square."""
    return (mask[..., None] & _POW) != 0


class _BatchState:
    """Black/white bitboards and side to move for a batch of games (internal)."""

    def __init__(self, n: int):
        self.black = np.full(n, START_BLACK, dtype=np.uint64)
        self.white = np.full(n, START_WHITE, dtype=np.uint64)
        self.side = np.zeros(n, dtype=np.int8)
        self.over = np.zeros(n, dtype=bool)

    def resolve(self) -> np.ndarray:
        """Apply forced passes, mark finished games; returns the movers' legal masks."""
        w = self.side == WHITE
        me, opp = np.where(w, self.white, self.black), np.where(w, self.black, self.white)
        legal = legal_mask_np(me, opp)
        stuck = (legal == 0) & ~self.over
        if stuck.any():
            other = legal_mask_np(opp[stuck], me[stuck])
            idx = np.nonzero(stuck)[0]
            self.side[idx] = 1 - self.side[idx]
            legal[idx] = other
            self.over[idx[other == 0]] = True
        legal[self.over] = 0
        return legal

    def play(self, sq: np.ndarray) -> None:
        """Play square ``sq`` (-1: no move) for each game's side to move; flips and hands over."""
        live = sq >= 0
        bit = np.where(live, np.uint64(1) << np.maximum(sq, 0).astype(np.uint64), np.uint64(0))
        w = self.side == WHITE
        me, opp = np.where(w, self.white, self.black), np.where(w, self.black, self.white)
        f = flips_mask_np(me, opp, bit)
        if np.any(live & (f == 0)):
            raise ValueError("illegal move in batch")
        me, opp = me | f | bit, opp & ~f
        self.black = np.where(w, opp, me)
        self.white = np.where(w, me, opp)
        self.side = np.where(live, 1 - self.side, self.side).astype(np.int8)


def random_games(n: int, seed: int = 0, chunk: int = 1024) -> np.ndarray:
    """``n`` games of uniformly random legal moves, seeded: int8 array (n, 60) of squares, -1 after
    the game ends. Games are made in chunks of ``chunk``, chunk k from rng ``(seed, k)``, and the
    last chunk is made whole and cut, so ``random_games(n, s)[:k] == random_games(k, s)``.
    Costs about 50 ms per 1000 games on one core."""
    out = np.full((-(-n // chunk) * chunk, 60), -1, dtype=np.int8)
    for k, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([seed, k])
        st = _BatchState(chunk)
        for t in range(60):
            legal = st.resolve()
            if st.over.all():
                break
            choice = np.argmax(rng.random((chunk, 64)) * unpack(legal), axis=1)
            choice = np.where(st.over, -1, choice)
            out[start : start + chunk, t] = choice
            st.play(choice)
    return out[:n]


def replay_batch(moves: np.ndarray) -> dict[str, np.ndarray]:
    """Replay games (int array (n, T), -1 padding) and return per-move uint64 arrays (n, T), each
    describing the position *after* move t: ``black``, ``white``, ``legal`` (squares the player who
    actually moves next may play; 0 once the game is over), ``next_side`` (that player, int8;
    -1 when over) and ``mover`` (who played move t, int8; -1 on padding). Raises ValueError on
    an illegal move. Costs about the same as `random_games`."""
    moves = np.asarray(moves)
    n, T = moves.shape
    st = _BatchState(n)
    res = {k: np.zeros((n, T), dtype=np.uint64) for k in ("black", "white", "legal")}
    res["next_side"] = np.full((n, T), -1, dtype=np.int8)
    res["mover"] = np.full((n, T), -1, dtype=np.int8)
    legal = st.resolve()
    for t in range(T):
        sq = moves[:, t].astype(np.int64)
        live = sq >= 0
        if np.any(live & st.over):
            raise ValueError("move after the game ended")
        ok = (legal & (np.uint64(1) << np.maximum(sq, 0).astype(np.uint64))) != 0
        if np.any(live & ~ok):
            raise ValueError(f"illegal move at ply {t}")
        res["mover"][:, t] = np.where(live, st.side, -1)
        st.over |= ~live
        st.play(np.where(live, sq, -1))
        legal = st.resolve()
        res["black"][:, t], res["white"][:, t], res["legal"][:, t] = st.black, st.white, legal
        res["next_side"][:, t] = np.where(st.over, -1, st.side)
    return res
