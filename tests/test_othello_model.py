"""The shipped Othello testbed model: its recorded legal-move rate, residual alignment, rebuilds."""

import json

import numpy as np
import pytest
import torch

from saesteer.testbeds.othello.dataset import encode, heldout_games
from saesteer.testbeds.othello.model import (
    SHIPPED,
    legal_move_rate,
    load_metrics,
    load_model,
    make_config,
    make_model,
    residual_stream,
)
from saesteer.testbeds.othello.train import train

shipped = pytest.mark.skipif(not (SHIPPED / "config.json").exists(), reason="no shipped Othello model")


@shipped
def test_shipped_model_reproduces_its_recorded_legal_move_rate():
    torch.set_num_threads(1)
    metrics = load_metrics()
    model = load_model()
    rate = legal_move_rate(model, heldout_games(200))
    assert abs(rate - metrics["legal_move_rate_200"]) <= 0.01
    assert metrics["legal_move_rate"] >= 0.95 and not metrics["stopped_by_time_budget"]
    size = sum(f.stat().st_size for f in SHIPPED.iterdir() if f.is_file())
    assert size <= 8 * 2**20
    # a never-trained model of the same shape is far from legal play
    assert legal_move_rate(make_model(model.config, seed=1).eval(), heldout_games(50)) < 0.5


@shipped
def test_shipped_tokenizer_matches_dataset_tokens():
    from transformers import AutoTokenizer

    tk = AutoTokenizer.from_pretrained(str(SHIPPED))
    assert tk("f5 d6 c3")["input_ids"] == encode(np.array([[44, 29, 18] + [-1] * 57]))[0, :4].tolist()


def test_residual_stream_is_aligned_with_moves():
    torch.manual_seed(0)
    model = make_model(make_config(n_layer=2, d_model=32, n_head=2)).eval()
    g = heldout_games(3)
    res = residual_stream(model, g, batch=2)
    assert res.shape == (3, 3, 60, 32)
    # entry [l, 1, t] is the state after move t: the last position of the prefix <bos> m_0..m_t
    t = 9
    prefix = torch.from_numpy(encode(g[1:2])[:, : t + 2])
    with torch.no_grad():
        hs = model(input_ids=prefix, output_hidden_states=True).hidden_states
    for layer in range(3):
        assert torch.allclose(res[layer, 1, t], hs[layer][0, -1], atol=1e-5)


def test_train_is_deterministic_and_writes_metrics(tmp_path):
    kw = dict(steps=3, batch=16, n_layer=1, d_model=32, n_head=2, eval_every=0, eval_games=40, log=lambda s: None)
    m1 = train(tmp_path / "a", **kw)
    paused = train(tmp_path / "b", session_steps=2, **kw)  # as if the time budget ran out
    assert paused["stopped_by_time_budget"] and paused["steps"] == 2
    assert (tmp_path / "b" / "checkpoint.pt").exists() and not (tmp_path / "b" / "model.safetensors").exists()
    m2 = train(tmp_path / "b", **kw)  # the same call resumes and finishes
    a, b = (tmp_path / "a" / "model.safetensors").read_bytes(), (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a == b and not (tmp_path / "b" / "checkpoint.pt").exists() and m2["sessions"] == 2
    train(tmp_path / "c", session_steps=1, **kw)
    with pytest.raises(ValueError, match="checkpoint"):  # a checkpoint of other settings is refused
        train(tmp_path / "c", **{**kw, "lr": 1e-4})
    assert m1["legal_move_rate"] == m2["legal_move_rate"] and 0 <= m1["legal_move_rate"] <= 1
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["steps"] == 3 and saved["train_games"] == 48 and saved["size_bytes"] > 0
    reloaded = load_model(tmp_path / "a")
    assert abs(legal_move_rate(reloaded, heldout_games(40)) - saved["legal_move_rate"]) < 1e-9
    with pytest.raises(FileNotFoundError, match="rebuild"):
        load_model(tmp_path / "missing")
