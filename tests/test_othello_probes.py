"""Linear board probes: a probe recovers a board that is linearly present, and runs per layer."""

import numpy as np
import torch

from saesteer.testbeds.othello.dataset import heldout_games, train_games
from saesteer.testbeds.othello.labels import mine_theirs
from saesteer.testbeds.othello.model import SHIPPED, load_model, make_config, make_model
from saesteer.testbeds.othello.probes import fit_probe, probe_accuracy, probe_layers


def test_probe_recovers_a_linearly_encoded_board():
    torch.set_num_threads(1)
    lab = mine_theirs(train_games(60, shard=7)).flat()  # (N, 64, 3)
    y = torch.from_numpy(lab.argmax(-1))
    x = torch.from_numpy(lab.reshape(len(lab), -1).astype(np.float32))
    x = x @ torch.randn(192, 192, generator=torch.Generator().manual_seed(0))  # a rotated board
    probe = fit_probe(x, y, 3, epochs=20)
    assert probe_accuracy(probe, x, y, 3) > 0.99
    # shuffled labels carry no signal: accuracy falls to about the class frequencies
    ys = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    assert probe_accuracy(fit_probe(x, ys, 3, epochs=2), x, ys, 3) < 0.8


def test_probe_layers_reports_every_layer():
    torch.set_num_threads(1)
    model = make_model(make_config(n_layer=2, d_model=32, n_head=2)).eval()
    out = probe_layers(model, train_games(40, shard=8), heldout_games(10), epochs=1)
    assert len(out["accuracy"]) == 3 and all(0 <= a <= 1 for a in out["accuracy"])
    assert out["classes"] == ("theirs", "blank", "mine") and out["n_test"] == int((heldout_games(10) >= 0).sum())
    assert 0.3 < out["baseline"] < 0.9


def test_shipped_model_board_is_linearly_decodable():
    if not (SHIPPED / "config.json").exists():
        import pytest

        pytest.skip("no shipped Othello model")
    torch.set_num_threads(1)
    out = probe_layers(load_model(), train_games(300, shard=9), heldout_games(60), epochs=4)
    assert max(out["accuracy"][1:]) > out["baseline"] + 0.15
    assert max(out["accuracy"][1:]) > out["accuracy"][0]
