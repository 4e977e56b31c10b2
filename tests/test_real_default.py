"""The embedded default: SmolLM2-135M-Instruct + the bundled SAE, offline, no training step."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

import saesteer
from saesteer.cli import main
from saesteer.embedded import default_sae_path, load_default

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def default():
    return load_default()


def test_bundled_sae_is_small_and_complete():
    path = default_sae_path()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 20 * 2**20
    card = json.loads((path / "training_card.json").read_text())
    assert card["tokens_seen"] >= 2_000_000 and card["d_sae"] >= 8 * 576
    sae = saesteer.load_sae(path)
    assert sae.W_dec.dtype == torch.float32 and sae.cfg.hook_name == "blocks.15.hook_resid_post"
    assert len(sae.labels) == sae.d_sae


@torch.no_grad()
def test_reconstructs_text_it_never_saw(default):
    """FVU and CE-loss recovered on Python's own docstrings (not in the training corpus' form)."""
    sm, tok = default
    import collections, json as js, pathlib  # noqa: E401

    text = "\n".join(inspect.getdoc(o) or "" for m in (collections, js, pathlib) for _, o in inspect.getmembers(m)
                     if callable(o))
    ids = tok(text, return_tensors="pt").input_ids[:, : 128 * 8].reshape(8, 128)
    from saesteer.train import evaluate_sae

    m = evaluate_sae(sm.sae, sm.model, "blocks.15.hook_resid_post", ids, batch_size=8)
    assert m["fvu"] < 0.35, m
    assert m["ce_loss_recovered"] > 0.75, m


def test_labels_find_concepts(default):
    sm, _ = default
    for query in ("shakespeare", "python", "kjv"):
        hits = sm.sae.labels.search(query, top=3)
        src = query if query != "python" else "python-docs"
        assert any(sm.sae.labels.info(h.feature)["sources"].get(src, 0) >= 0.5 for h in hits), query


def test_main_command_offline(default, capsys):
    sm, _ = default
    feat = sm.sae.labels.search("shakespeare", top=1)[0].feature
    value = 2 * sm.sae.labels.info(feat)["max_activation"]
    assert main(["generate", "Tell me about the sea.", "--clamp", f"{feat}={value}", "--max-new-tokens", "16"]) == 0
    out = capsys.readouterr().out
    plain = out.split("--- unsteered ---")[1].split("--- steered ---")[0].strip()
    steered = out.split("--- steered ---")[1].strip()
    assert plain and steered and plain != steered
    assert main(["features", "--search", "shakespeare"]) == 0
    assert str(feat) in capsys.readouterr().out


def test_saesteer_check_passes_on_the_default(capsys):
    """`saesteer check` on SmolLM2-135M-Instruct + the bundled SAE: every conformance row PASSes (the
    single unpadded prompt included, which transformers 5.24+ calls without a mask), exit code 0."""
    assert main(["check", "--no-progress", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "14 passed, 0 failed" in out and "FAIL " not in out
    assert "positions='generated' = range(P, end), 1 unpadded prompt" in out
