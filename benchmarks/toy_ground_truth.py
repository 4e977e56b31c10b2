#!/usr/bin/env python3
"""Sparse but Wrong's L0 proxy on its toy model: train TopK SAEs at several k, compute s_n for each, and
check that s_n is smallest at the true L0.

    python scripts/sn_toy_sweep.py [--architecture batchtopk] [--samples 15000000] [--jobs 6] [--device cuda]

The toy model follows SEED_METHODS.md section 2: 50 true features in 100 dimensions, orthogonal
directions; feature i fires with probability 0.345 (49 - i) / 50 + 0.05, correlated through a Gaussian
copula (random correlations of strength U(0.3, 0.9), half of them positive, 30 % of pairs uncorrelated,
projected to PSD), magnitude ReLU(1 + N(0, 0.15)); seed 42; the true L0 is about 11. The SAEs are
saesteer's own trainer (BatchTopK by default, as the paper; d_sae 50, batch 1024, Adam lr 3e-4, constant
LR, activations not normalised), one SAE per k, each in its own process (``--jobs`` at a time). s_n is
read for every n in ``--ns`` (the toy notebooks plot 12..25) on 409,600 held-out samples in batches of
4096. Prints the table, writes the figure (``--out``) and the numbers (``--json``). At the paper's 15M
samples a run takes ~25 min per SAE-process on one CPU core; ``--samples 3000000`` ~5 min.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saesteer.eval import svg  # noqa: E402
from saesteer.eval.card import l0_sweep  # noqa: E402
from saesteer.toy import toy_activations  # noqa: E402
from saesteer.train import TrainConfig, train_sae  # noqa: E402


def toy(n_samples: int, seed: int = 42) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The toy model's samples, directions and true L0 (:func:`saesteer.toy.toy_activations`)."""
    return toy_activations(n_samples, seed)


def worker(a: argparse.Namespace) -> None:
    """Train one SAE (k = ``a.k``) and write its L0, s_n for each n and decoder recovery to ``a.worker``."""
    torch.set_num_threads(a.threads)
    x, D, true_l0 = toy(a.samples)
    held = toy_activations(409_600, sample_seed=7)[0]  # held-out samples of the same toy model
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(architecture=a.architecture, d_sae=50, k=a.k, lr=3e-4, batch_tokens=1024,
                          total_tokens=a.samples, warmup_steps=0, lr_decay_frac=0.0, normalize_activations=False,
                          seed=0, device=a.device)
        blocks = [x[i:i + 65536] for i in range(0, x.shape[0], 65536)]
        sae = train_sae(blocks, cfg, Path(tmp) / f"k{a.k}", resume=False, progress=False).to("cpu")
    cos = (torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=-1) @ D.T).abs()
    rows = {n: l0_sweep([(f"k={a.k}", sae)], held, n)["rows"][0] for n in a.ns}
    out = {"k": a.k, "architecture": a.architecture, "samples": a.samples, "true_l0": true_l0,
           "l0": rows[a.ns[0]]["l0"], "s_n": {str(n): r["s_n"] for n, r in rows.items()},
           "decoder_max_cos_mean": float(cos.max(1).values.mean()),
           "true_recovered_0.9": float((cos.max(0).values > 0.9).float().mean())}
    Path(a.worker).write_text(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=15_000_000)
    ap.add_argument("--architecture", default="batchtopk")
    ap.add_argument("--ks", type=int, nargs="+", default=[5, 8, 10, 11, 12, 14, 18, 24])
    ap.add_argument("--ns", type=int, nargs="+", default=list(range(12, 26)),
                    help="s_n's n values (the paper's toy notebooks plot 12..25); the figure uses --n")
    ap.add_argument("--n", type=int, default=18)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "sn_toy.svg"))
    ap.add_argument("--json", default=None, help="write the table here")
    ap.add_argument("--from-json", default=None, help="only redraw the figure and table from an earlier --json")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    if a.from_json:
        res = json.loads(Path(a.from_json).read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            procs, res = [], []
            for k in a.ks:
                cmd = [sys.executable, __file__, "--worker", f"{tmp}/k{k}.json", "--k", str(k), "--samples",
                       str(a.samples), "--architecture", a.architecture, "--device", a.device, "--threads",
                       str(a.threads), "--ns", *map(str, a.ns)]
                procs.append(subprocess.Popen(cmd))
                while sum(p.poll() is None for p in procs) >= a.jobs:
                    procs[[p.poll() is None for p in procs].index(True)].wait()
            if any(p.wait() for p in procs):
                raise SystemExit("a worker failed")
            res = [json.loads(Path(f"{tmp}/k{k}.json").read_text()) for k in a.ks]
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1))
    report(res, a.n, a.out)


def report(res: list[dict], n: int, out: str) -> None:
    rows = sorted(res, key=lambda r: r["l0"])
    true_l0 = rows[0]["true_l0"]
    ns = sorted(int(m) for m in rows[0]["s_n"])
    print(f"{rows[0]['architecture']} SAEs, d_sae 50, {rows[0]['samples']:,} samples; true L0 {true_l0:.2f}")
    print("| k | L0 | decoder mean max cos | true features recovered > 0.9 | s_n, n = " + f"{n} |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['l0']:.2f} | {r['decoder_max_cos_mean']:.3f} | {r['true_recovered_0.9']:.2f} | "
              f"{r['s_n'][str(n)]:.4f} |")
    picks = {m: min(rows, key=lambda r: r["s_n"][str(m)])["k"] for m in ns}
    print("k picked by s_n for each n: " + ", ".join(f"n={m}: {k}" for m, k in picks.items()))
    best = max(rows, key=lambda r: r["decoder_max_cos_mean"])["k"]
    print(f"best decoder recovery at k={best}; true L0 {true_l0:.2f}")
    fig = svg.lines({f"n={m}": ([r["l0"] for r in rows], [r["s_n"][str(m)] for r in rows]) for m in (ns[0], n, ns[-1])},
                    title=f"Sparse but Wrong toy model: s_n against L0 ({rows[0]['architecture']}); true L0 {true_l0:.1f}",
                    xlabel="L0 of the trained SAE", ylabel="s_n", vline=true_l0,
                    mark=(min(rows, key=lambda r: r["s_n"][str(n)])["l0"], min(r["s_n"][str(n)] for r in rows)))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
