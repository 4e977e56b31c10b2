"""Ground-truth testbeds: small models trained here whose internal state is known exactly.

`saesteer.testbeds.othello` is an OthelloGPT-style move-sequence model with a legal-move engine
and board-state labels, so an SAE's features can be scored against the true board (Karvonen et
al., arXiv 2408.00113, §1 of the seed methods).
"""
