"""SAE training throughput, the SAE step alone: every architecture of ``saesteer.train.SAETrainer``
beside saesteer's TopK, eai-sparsify's ``SparseCoder`` trained as its ``Trainer`` does (TopK), and
dictionary_learning's trainers for the architectures it implements (TopK, BatchTopK, JumpReLU, Gated,
p-annealing, Matryoshka BatchTopK; ``pip install --no-deps dictionary-learning==0.1.0``, skipped when
absent), same width, k, batch and Adam, on the same cached activations.

    python benchmarks/training_throughput.py                   # SmolLM2 layer-15 activations, 4608 x 576, k 32
    python benchmarks/training_throughput.py --acts FOLDER     # a saesteer activation cache (safetensors shards)

Activations: ``--acts`` (a cache written by ``saesteer train --cache`` or ``ActivationSource.cache``),
else 64k tokens collected once from SmolLM2-135M-Instruct at ``blocks.15.hook_resid_post`` on the
corpus's held-out text (``scripts/build_corpus.py``) or, without a corpus, a built-in paragraph. Both
trainers see the same batches in the same order. Each repetition times ``--steps`` steps of each trainer,
interleaved; figures are medians over repetitions. The sparsity coefficients are the references' defaults
(they change the step's cost only through how many latents fire, which does not enter a dense step).
Ordered has no public reference implementation. A step of sparsify, as in its ``Trainer``: unit-norm
decoder, forward with the AuxK dead mask, ``fvu + auxk_alpha * auxk_loss``, backward, decoder-parallel
gradient removed, ``Adam.step``, dead counters updated.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steering_overhead import TEXT  # noqa: E402

from saesteer.train import CachedActivations, SAETrainer, TrainConfig  # noqa: E402


def collect(n_tokens: int) -> torch.Tensor:
    """``[n_tokens, 576]`` activations of SmolLM2 at blocks.15.hook_resid_post (fp32)."""
    from saesteer.embedded.smollm2 import load_smollm2
    from saesteer.train import ActivationSource

    try:
        from saesteer.data.corpus import iter_corpus

        texts = list(iter_corpus(split="heldout"))
    except Exception:  # no corpus built: a built-in paragraph, repeated
        texts = [TEXT] * 200
    model, tok = load_smollm2(dtype=torch.bfloat16)
    src = ActivationSource(model, "blocks.15.hook_resid_post", texts, tokenizer=tok, context_length=256,
                           buffer_tokens=n_tokens)
    rows, got = [], 0
    for block in src:
        rows.append(block.float())
        got += block.shape[0]
        if got >= n_tokens:
            break
    return torch.cat(rows)[:n_tokens]


def saesteer_runner(cfg: TrainConfig, d_in: int) -> Callable[[torch.Tensor], None]:
    trainer = SAETrainer(cfg, d_in)
    return lambda x: trainer.step(x) and None


def sparsify_runner(cfg: TrainConfig, d_in: int) -> Callable[[torch.Tensor], None]:
    from sparsify import SparseCoder
    from sparsify.config import SparseCoderConfig

    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=cfg.width(d_in), k=cfg.k), device="cpu")
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (sae.num_latents / 2**14) ** 0.5, eps=6.25e-10)
    since_fired = torch.zeros(sae.num_latents, dtype=torch.long)
    auxk_alpha, dead_after = cfg.auxk_alpha, 10_000_000
    initialised = [False]

    def step(x: torch.Tensor) -> None:
        if not initialised[0]:  # sparsify's trainer sets b_dec to the first batch's mean
            sae.b_dec.data = x.mean(0)
            initialised[0] = True
        sae.set_decoder_norm_to_unit_norm()
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = sae(x=x, y=x, dead_mask=since_fired > dead_after, total_variance=total_variance)
        (out.fvu + auxk_alpha * out.auxk_loss).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            since_fired.add_(x.shape[0])
            since_fired[out.latent_indices.flatten()] = 0

    return step


def dictionary_learning_runner(arch: str, cfg: TrainConfig, d_in: int) -> Callable[[torch.Tensor], None] | None:
    """dictionary_learning's trainer for ``arch`` (its ``update(step, x)``: forward, loss, backward, its
    constrained Adam), or None where it has none or is not installed."""
    try:
        from dictionary_learning import trainers as T
        from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKTrainer
    except ImportError:
        return None
    common = dict(steps=10**6, activation_dim=d_in, dict_size=cfg.width(d_in), layer=0, lm_name="bench", device="cpu",
                  seed=0)
    make = {"topk": lambda: T.TopKTrainer(k=cfg.k, **common),
            "batchtopk": lambda: T.BatchTopKTrainer(k=cfg.k, **common),
            "jumprelu": lambda: T.JumpReluTrainer(**common),
            "gated": lambda: T.GatedSAETrainer(**common),
            "p_anneal": lambda: T.PAnnealTrainer(**common),
            "matryoshka": lambda: MatryoshkaBatchTopKTrainer(k=cfg.k, group_fractions=[1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2],
                                                            **common)}.get(arch)
    if make is None:
        return None
    trainer = make()
    count = [0]

    def step(x: torch.Tensor) -> None:
        trainer.update(count[0], x)
        count[0] += 1

    return step


ARCHS = ("topk", "batchtopk", "jumprelu", "gated", "p_anneal", "matryoshka", "ordered")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--acts", help="a saesteer activation cache folder")
    p.add_argument("--tokens", type=int, default=65536, help="activations to collect when --acts is not given")
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=8, help="steps per trainer per repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--architectures", nargs="+", default=list(ARCHS), choices=ARCHS)
    a = p.parse_args()
    torch.manual_seed(0)
    x = CachedActivations(a.acts).read_shard(0).float() if a.acts else collect(a.tokens)
    batches = [x[i:i + a.batch] for i in range(0, x.shape[0] - a.batch + 1, a.batch)]
    d_in = x.shape[1]
    cfg = TrainConfig(architecture="topk", k=a.k, d_sae=a.d_sae, batch_tokens=a.batch,
                      total_tokens=a.batch * a.steps * (a.reps + 1) * 2)
    runners: dict[tuple[str, str], Callable[[torch.Tensor], None]] = {
        ("topk", "saesteer (fp32)"): saesteer_runner(cfg, d_in),
        ("topk", "saesteer (bf16 encoder matmul)"): saesteer_runner(dataclasses.replace(cfg, encode_dtype="bfloat16"), d_in),
        ("topk", "eai-sparsify (Adam, fp32)"): sparsify_runner(cfg, d_in),
    }
    for arch in a.architectures:
        arch_cfg = dataclasses.replace(cfg, architecture=arch)
        if arch != "topk":
            runners[(arch, "saesteer (fp32)")] = saesteer_runner(arch_cfg, d_in)
        dl = dictionary_learning_runner(arch, arch_cfg, d_in)
        if dl is not None:
            runners[(arch, "dictionary_learning (fp32)")] = dl
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    for rep in range(a.reps + 1):  # the first repetition warms up and is not counted
        for name, step in runners.items():
            t0 = time.perf_counter()
            for s in range(a.steps):
                step(batches[(rep * a.steps + s) % len(batches)])
            if rep:
                times[name].append(time.perf_counter() - t0)
    tokens = a.steps * a.batch
    base = statistics.median(times[("topk", "saesteer (fp32)")])
    sparsify = statistics.median(times[("topk", "eai-sparsify (Adam, fp32)")])
    print(f"SAE step alone: d_in {d_in}, d_sae {a.d_sae}, k {a.k}, batch {a.batch}, {a.steps} steps x "
          f"{a.reps} repetitions, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| architecture | trainer | tokens/s | x saesteer TopK | x eai-sparsify TopK | x dictionary_learning, same architecture |")
    print("|---|---|---|---|---|---|")
    for (arch, name), t in times.items():
        med = statistics.median(t)
        ref = times.get((arch, "dictionary_learning (fp32)"))
        vs_dl = f"{statistics.median(ref) / med:.2f}" if ref and "saesteer" in name else ""
        print(f"| {arch} | {name} | {tokens / med:,.0f} | {base / med:.2f} | {sparsify / med:.2f} | {vs_dl} |")


if __name__ == "__main__":
    main()
