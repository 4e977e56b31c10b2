"""A newcomer's first hour (issue 16): what the README and the CLI promise, checked as a newcomer
meets it. Everything here runs without loading a model unless marked ``real``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import saesteer
from saesteer import cli
from saesteer.cli import main


def _no_model(monkeypatch):
    """Fail the test if the CLI loads a model: the checks must come first."""
    def boom(*a, **k):
        raise AssertionError("the model was loaded before the check")
    monkeypatch.setattr(cli, "load_model", boom)


def test_embedded_is_reachable_without_importing_it_first():
    out = subprocess.run([sys.executable, "-c", "import saesteer; print(callable(saesteer.embedded.load_default))"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


def test_help_does_not_import_torch():
    code = "import sys; from saesteer.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_feature_index_is_checked_before_the_model_loads(monkeypatch, capsys):
    _no_model(monkeypatch)
    assert main(["generate", "hi", "--clamp", "999999=5"]) == 2
    assert "feature index 999999 is out of range for an SAE with d_sae=4608" in capsys.readouterr().err
    assert main(["generate", "hi", "--erase", "4608"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_layer_other_than_the_sae_hook_is_refused_before_the_model_loads(monkeypatch, capsys):
    _no_model(monkeypatch)
    assert main(["generate", "hi", "--clamp", "1=5", "--layer", "3"]) == 2
    err = capsys.readouterr().err
    assert "trained at blocks.15.hook_resid_post" in err and "--force-hook" in err


def test_huge_values_warn_naming_the_features_range(monkeypatch, capsys):
    _no_model(monkeypatch)
    with pytest.raises(AssertionError, match="model was loaded"):  # warned, then went on to load
        main(["generate", "hi", "--clamp", "1309=1e9"])
    err = capsys.readouterr().err
    assert "warning" in err and "largest activation seen is" in err


def test_hub_id_offline_fails_at_once(monkeypatch, capsys):
    from saesteer.sae.formats import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    t = time.perf_counter()
    with pytest.raises(saesteer.SaesteerError, match="unreachable.*local folder|pass its folder"):
        cli.load_model("someone/not-a-cached-model")
    assert time.perf_counter() - t < 15
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_reachable() is False


def test_inspect_without_a_path_shows_the_bundled_sae(capsys):
    assert main(["inspect"]) == 0
    out = capsys.readouterr().out
    assert "blocks.15.hook_resid_post" in out and "d_sae: 4608" in out


def test_features_without_an_option_prints_usage(capsys):
    assert main(["features"]) == 2
    err = capsys.readouterr().err
    assert "--search" in err and "None" not in err


def test_readme_two_lines_pass_tokenizer_and_max_new_tokens():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("## Two lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "tokenizer=" in block and "max_new_tokens" in block.split("model.edits", 1)[1]


@pytest.mark.real
def test_the_readme_two_lines_run_as_printed():
    """README's "Two lines" block, run with the names it assumes bound to the embedded default."""
    from pathlib import Path

    import torch

    from saesteer.embedded import default_sae_path, load_smollm2

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("## Two lines", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    hf_causal_lm, tok = load_smollm2()
    env = {"hf_causal_lm": hf_causal_lm, "tok": tok, "inputs": tok(["The sea is"], return_tensors="pt")}
    block = block.replace('"path/to/sae"', repr(str(default_sae_path()))).replace("blocks.12.", "blocks.15.")
    exec(compile(block, "README.md", "exec"), env)  # noqa: S102 - our own README
    assert env["out"].shape[1] > env["inputs"]["input_ids"].shape[1]
    assert env["acts"].tokens is not None and env["acts"].tokens[0][0] is not None
    assert isinstance(env["bare"], torch.nn.Module)


@pytest.mark.real
def test_cli_echo_names_hook_and_positions_and_explains_a_silent_feature(capsys):
    """Erasing the rarest feature of the bundled SAE (it fires on 0.02 % of the labelling corpus) leaves
    the greedy text as it is: the CLI says why instead of printing two equal texts."""
    assert main(["generate", "Tell me about the sea.", "--erase", "173", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "hook     : blocks.15.hook_resid_post" in out and "positions: all" in out
    plain = out.split("--- unsteered ---")[1].split("--- steered ---")[0].strip()
    steered = out.split("--- steered ---")[1].split("\nnote")[0].strip()
    assert plain == steered
    assert "note: the steered text equals the unsteered one: feature 173 never fired" in out


@pytest.mark.real
def test_features_of_a_text_leave_the_attention_sink_out_of_the_ranking(capsys):
    """Position 0 (the attention sink, activations in the thousands) dominated `features --text`."""
    assert main(["features", "--text", "The sea is calm tonight."]) == 0
    out = capsys.readouterr().out
    assert out.count("(attention sink: not ranked)") == 1
    ranking = out.split("top features of the text (position 0 left out):")[1].strip().splitlines()
    sink_line = next(line for line in out.splitlines() if "attention sink" in line)
    sink_max = max(float(t.split("=")[1]) for t in sink_line.split("'")[-1].split("(")[0].split(", "))
    values = [float(line.split()[1]) for line in ranking]
    assert values == sorted(values, reverse=True)
    assert sink_max > 10 * values[0]  # the sink's activations would have topped the ranking
