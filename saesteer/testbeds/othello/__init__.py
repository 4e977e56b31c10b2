"""Othello ground-truth testbed: engine, games as tokens, board-state labels, a small trained model.

* `game`: bitboard legal moves, flips and passes; batched random games (`random_games`).
* `dataset`: the 62-token vocabulary (OthelloGPT's square tokens plus ``<pad>``/``<bos>``),
  fixed seeded train/held-out splits, the HF tokenizer.
* `labels`: the paper's board-state properties (mine/theirs/blank, blank-masked, legal moves).
* `model`: load the shipped GPT-2-style model, its legal-move rate, its residual stream.
* `train`: ``python3 -m saesteer.testbeds.othello.train --out DIR`` rebuilds the model.
"""
