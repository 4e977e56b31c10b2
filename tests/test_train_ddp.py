"""Data-parallel training (saesteer.train.distributed): two gloo processes under torchrun give the
weights one process gives with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ddp_worker
from saesteer.train import train_sae

HERE = Path(__file__).resolve().parent


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    r = _torchrun([str(HERE / "ddp_worker.py"), str(out)], out)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "sae_weights.safetensors")


@pytest.mark.parametrize("arch", list(ddp_worker.RUNS))
def test_two_processes_equal_one(ddp_run, tmp_path, arch):
    torch.set_num_threads(1)
    train_sae(ddp_worker.data(), ddp_worker.config(arch), tmp_path / arch, resume=False, progress=False)
    one, two = _weights(tmp_path / arch), _weights(ddp_run / arch)
    assert json.loads((ddp_run / "rank1.json").read_text())["world"] == 2
    assert one.keys() == two.keys()
    for name, t in one.items():
        assert torch.allclose(two[name], t, atol=2e-5, rtol=1e-4), (arch, name, (two[name] - t).abs().max())
    # the run trained (weights moved from the seed's initialisation), and both saw every token
    card2 = json.loads((ddp_run / arch / "training_card.json").read_text())
    card1 = json.loads((tmp_path / arch / "training_card.json").read_text())
    assert card2["tokens_seen"] == card1["tokens_seen"] == 256 * 24
    assert abs(card2["train_fvu"] - card1["train_fvu"]) < 1e-4 and card1["train_fvu"] < 0.9
    assert card2["train_l0"] == pytest.approx(card1["train_l0"], abs=1e-3)


def test_naive_halves_would_differ(ddp_run, tmp_path):
    """The check above can fail: a process training on half of each batch alone ends elsewhere."""
    torch.set_num_threads(1)
    cfg = ddp_worker.config("batchtopk")
    half = [b[: b.shape[0] // 2] for b in ddp_worker.data()]
    import dataclasses
    alone = train_sae(half, dataclasses.replace(cfg, batch_tokens=128, total_tokens=128 * 24), tmp_path / "half",
                      resume=False, progress=False)
    assert not torch.allclose(alone.W_dec, _weights(ddp_run / "batchtopk")["W_dec"], atol=1e-3)


def test_cli_under_torchrun_equals_one_process(tmp_path):
    from tiny import save_word_level_model, tiny_lm

    words = save_word_level_model(tmp_path / "model", tiny_lm("llama"))
    g = torch.Generator().manual_seed(0)
    (tmp_path / "text").mkdir()
    paras = [" ".join(words[i] for i in torch.randint(0, len(words), (60,), generator=g).tolist()) for _ in range(24)]
    (tmp_path / "text" / "doc.txt").write_text("\n\n".join(paras))

    def argv(out: str, cache: str) -> list[str]:
        return ["--model", str(tmp_path / "model"), "--hook", "blocks.1.hook_resid_post", "--text",
                str(tmp_path / "text"), "--out", str(tmp_path / out), "--architecture", "batchtopk", "--k", "4",
                "--d-sae", "64", "--batch-tokens", "128", "--total-tokens", "1024", "--context-length", "32",
                "--eval-seqs", "2", "--cache", str(tmp_path / cache), "--lr", "3e-3", "--no-progress"]

    r = _torchrun(["-m", "saesteer.cli", "train", *argv("two", "cache2")], tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.count('"tokens_seen": 1024') == 1  # rank 0 reports, once
    from saesteer.train.cli import train_main

    torch.set_num_threads(1)
    assert train_main(argv("one", "cache1")) == 0
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=2e-5, rtol=1e-4), name


def test_cli_caches_from_a_device_map_model(tmp_path, monkeypatch):
    """``--device-map`` hands the map to transformers (here every module on the CPU: this machine has no
    GPUs to split over) and caches the same activations as a plain load."""
    import transformers

    from saesteer.train.cache import CachedActivations
    from saesteer.train.cli import train_main
    from tiny import save_word_level_model, tiny_lm

    words = save_word_level_model(tmp_path / "model", tiny_lm("llama"))
    maps = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *a, **kw):
        maps.append(kw.get("device_map"))
        return real(cls, *a, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "doc.txt").write_text("\n\n".join(" ".join(words[(7 * i + j) % len(words)] for j in range(50))
                                                           for i in range(12)))
    caches = {}
    for name, extra in (("plain", []), ("mapped", ["--device-map", "cpu"])):
        argv = ["--model", str(tmp_path / "model"), "--hook", "blocks.1.hook_resid_post", "--text", str(tmp_path / "text"),
                "--out", str(tmp_path / f"sae_{name}"), "--k", "4", "--d-sae", "32", "--batch-tokens", "64",
                "--total-tokens", "256", "--context-length", "32", "--eval-seqs", "1", "--cache", str(tmp_path / name),
                "--no-progress", *extra]
        assert train_main(argv) == 0
        caches[name] = torch.cat(list(CachedActivations(tmp_path / name, buffer_tokens=0).iter_epoch(0)))
    assert maps == [None, "cpu"]
    assert caches["plain"].shape[0] >= 256
    assert torch.equal(caches["plain"], caches["mapped"])
