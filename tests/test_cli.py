"""The ``saesteer`` command."""

from __future__ import annotations

import pytest
import torch

import saesteer
from saesteer.cli import main
from tiny import random_sae


@pytest.fixture
def sae_dir(tmp_path):
    sae = random_sae(d_in=576, d_sae=64)
    sae.cfg.hook_name = "blocks.10.hook_resid_post"
    return str(saesteer.save_sae(sae, tmp_path / "sae"))


def test_inspect(sae_dir, capsys):
    assert main(["inspect", sae_dir]) == 0
    out = capsys.readouterr().out
    assert "d_in: 576" in out and "blocks.10.hook_resid_post" in out


def test_errors_are_messages_not_tracebacks(sae_dir, capsys):
    assert main(["generate", "hi", "--sae", sae_dir, "--clamp", "5"]) == 2
    assert "--clamp takes FEATURE=VALUE" in capsys.readouterr().err
    assert main(["generate", "hi", "--sae", sae_dir]) == 2
    assert "at least one edit" in capsys.readouterr().err
    assert main(["inspect", "/nonexistent/sae"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.real
def test_generate_side_by_side(sae_dir, capsys):
    sae = saesteer.load_sae(sae_dir)
    feat = int(sae.W_dec.norm(dim=-1).argmax())
    amount = 60.0 / float(sae.W_dec[feat].detach().norm())
    assert main(["generate", "Tell me about the sea.", "--sae", sae_dir, "--add", f"{feat}={amount}",
                 "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    plain = out.split("--- unsteered ---")[1].split("--- steered ---")[0].strip()
    steered = out.split("--- steered ---")[1].strip()
    assert plain and steered and plain != steered
    assert "sea" in plain.lower()


def test_label_needs_text(sae_dir, capsys):
    assert main(["label", "--sae", sae_dir]) == 2
    assert "--text-file" in capsys.readouterr().err


@pytest.mark.real
def test_label_your_own_sae_then_search_it(sae_dir, tmp_path, capsys):
    """`saesteer label` was missing: an SAE trained with `saesteer train` had no way to get labels from
    the command line, and `features --search` said it had none."""
    assert main(["features", "--sae", sae_dir, "--search", "x"]) == 2
    assert "saesteer label" in capsys.readouterr().err
    text = tmp_path / "seashanties.txt"
    text.write_text("\n\n".join(f"Verse {i}: the sailors sang of the sea, the salt and the wind, "
                                f"and the ship rolled on the waves all night long." * 3 for i in range(12)))
    assert main(["label", "--sae", sae_dir, "--text-file", str(text), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "labelled 64 features" in out and "blocks.10.hook_resid_post" in out
    assert (saesteer.load_sae(sae_dir).labels is not None)
    assert main(["features", "--sae", sae_dir, "--search", "seashanties"]) == 0
    hits = capsys.readouterr().out.strip().splitlines()
    assert hits and "seashanties" in hits[0]
