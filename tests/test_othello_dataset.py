"""Othello dataset: the token vocabulary, the HF tokenizer, held-out prefixes, legal-next masks."""

import numpy as np

from saesteer.testbeds.othello.dataset import (
    BOS,
    PAD,
    SEQ_LEN,
    SQUARE_TO_TOKEN,
    TOKEN_TO_SQUARE,
    VOCAB_SIZE,
    decode,
    encode,
    heldout_games,
    legal_next_tokens,
    make_tokenizer,
    moves_from_text,
    text_from_moves,
    train_games,
)


def test_vocabulary_is_othellogpt_stoi_plus_bos():
    assert VOCAB_SIZE == 62 and PAD == 0 and BOS == 61
    assert SQUARE_TO_TOKEN[0] == 1 and SQUARE_TO_TOKEN[26] == 27 and SQUARE_TO_TOKEN[29] == 28
    assert SQUARE_TO_TOKEN[63] == 60 and all(SQUARE_TO_TOKEN[s] == -1 for s in (27, 28, 35, 36))
    assert TOKEN_TO_SQUARE[PAD] == TOKEN_TO_SQUARE[BOS] == -1
    assert all(TOKEN_TO_SQUARE[SQUARE_TO_TOKEN[s]] == s for s in range(64) if SQUARE_TO_TOKEN[s] > 0)


def test_encode_decode_and_tokenizer_agree():
    g = heldout_games(20)
    tok = encode(g)
    assert tok.shape == (20, SEQ_LEN) and (tok[:, 0] == BOS).all()
    assert np.array_equal(decode(tok[:, 1:]), g.astype(np.int64))
    lengths = (g >= 0).sum(1)
    assert all((tok[i, 1 + lengths[i] :] == PAD).all() for i in range(20))
    tk = make_tokenizer()
    for i in range(3):
        text = text_from_moves(g[i])
        assert moves_from_text(text) == g[i][: lengths[i]].tolist()
        assert tk(text)["input_ids"] == tok[i, : 1 + lengths[i]].tolist()


def test_splits_are_fixed_prefixes_and_differ():
    assert np.array_equal(heldout_games(1500)[:700], heldout_games(700))
    assert not np.array_equal(train_games(50), heldout_games(50))
    assert not np.array_equal(train_games(50, shard=1), train_games(50, shard=0))


def test_legal_next_tokens_cover_the_moves_played():
    g = heldout_games(50)
    legal, live = legal_next_tokens(g)
    assert legal.shape == (50, 60, VOCAB_SIZE) and live.shape == (50, 60)
    opening = sorted(TOKEN_TO_SQUARE[np.nonzero(legal[0, 0])[0]].tolist())
    assert opening == moves_from_text("c4 d3 e6 f5") == [19, 26, 37, 44]
    target = encode(g)[:, 1:]
    assert np.array_equal(live, target != PAD)  # a position has a next move iff a move was played
    played_is_legal = np.take_along_axis(legal, target[..., None], axis=-1)[..., 0]
    assert played_is_legal[live].all() and not legal[~live].any()
    assert not legal[..., [PAD, BOS]].any()
