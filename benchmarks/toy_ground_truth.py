#!/usr/bin/env python3
"""Every SAE architecture of ``saesteer train`` on the toy model of "Sparse but Wrong", whose true features
are known: how well each recovers them at several L0, where the s_n proxy puts the L0, and how steerable
the latent that best matches each true feature is.

    python benchmarks/toy_ground_truth.py --jobs 2                       # the README table and figure
    python benchmarks/toy_ground_truth.py --architectures topk ordered --samples 3000000
    python benchmarks/toy_ground_truth.py --from-json docs/toy_ground_truth.json   # redraw only

The toy model (:mod:`saesteer.toy`, SEED_METHODS.md section 2): 50 orthonormal true features in 100
dimensions, correlated firing (true L0 about 11), magnitudes ReLU(1 + N(0, 0.15)), seed 42. Each SAE:
d_sae 50, batch 1024, Adam at ``--lr`` (one rate for every architecture, constant after no warm-up, so
the architectures differ only in their loss), activations not normalised, ``--samples`` training samples
streamed from the generator. The sparsity knob is k for TopK, BatchTopK, Matryoshka and Ordered; the L0
coefficient for JumpReLU; the sparsity coefficient (lambda / initial alpha) for Gated and p-annealing;
``--grid`` overrides the values.

Measured on 409,600 held-out samples of the same toy model (``sample_seed=7``):

- L0, FVU;
- recovery: mean over true features of the best decoder row's |cos| (``true_max_cos``), and the fraction
  of true features with a decoder row above 0.9 (``recovered_0.9``);
- s_n (``--ns``; Sparse but Wrong's proxy: its minimum should sit at the true L0), per n;
- steerability of the latent j best matching each true feature i, with saesteer's error-preserving edit
  ``x' = x + decode(f') - decode(f)``: *on-target share*, the fraction of the edit's change inside the
  true-feature subspace that lies on feature i (``(D_i . dx)^2 / ||D dx||^2``; with a linear decoder every
  clamp of latent j moves x along its decoder row, so this is a property of the row), and *erasure*: on the
  samples where i fires, clamp j to 0 and read how much of i's coefficient ``D_i . x`` is gone (1 = all;
  latents that fire on only part of i's samples, or absorb it into others, remove less), with the mean
  |change| that lands on the other 49 features per unit removed (``spill``).

Writes the numbers (``--json``; rows already there are kept and not re-trained, so a stopped run
resumes) and a PNG report (``--png``, needs matplotlib: ``pip install
saesteer[bench]``). One job per (architecture, knob) in its own process, ``--jobs`` at a time.
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

from saesteer.eval.card import codes, l0_sweep  # noqa: E402
from saesteer.toy import recovery, steerability, toy_activations, toy_features  # noqa: E402
from saesteer.train import TrainConfig, train_sae  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: the sparsity knob of each architecture and its default sweep
KNOBS = {"topk": "k", "batchtopk": "k", "matryoshka": "k", "ordered": "k",
         "jumprelu": "l0_coefficient", "gated": "sparsity_coefficient", "p_anneal": "sparsity_coefficient"}
GRID = {"topk": [5, 8, 11, 14, 18, 24], "batchtopk": [5, 8, 11, 14, 18, 24], "matryoshka": [5, 8, 11, 14, 18, 24],
        "ordered": [5, 8, 11, 14, 18, 24], "jumprelu": [0.001, 0.003, 0.01, 0.03, 0.1],
        "gated": [0.1, 0.3, 1.0, 3.0, 10.0], "p_anneal": [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]}
#: the knobs near the true L0 whose steerability is also measured over ``--steer-seeds`` more SAE seeds
STEER = {"topk": [11, 14], "batchtopk": [11], "matryoshka": [11], "ordered": [11, 14], "jumprelu": [0.03],
         "gated": [1.0], "p_anneal": [0.1, 0.3]}
#: an s_n pick within this many latents of the true L0 counts as the true L0
L0_TOLERANCE = 1.0


def worker(a: argparse.Namespace) -> None:
    """Train one SAE (``a.architecture`` at knob ``a.value``) and write its row to ``a.worker``."""
    torch.set_num_threads(a.threads)
    knob = KNOBS[a.architecture]
    value = int(a.value) if knob == "k" else float(a.value)
    x, D, true_l0 = toy_activations(a.samples)
    f_held, _ = toy_features(409_600, sample_seed=7)   # held-out samples of the same toy model
    held = f_held @ D
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(architecture=a.architecture, d_sae=50, lr=a.lr, batch_tokens=1024, total_tokens=a.samples,
                          warmup_steps=0, lr_decay_frac=0.0, normalize_activations=False, seed=a.seed, device=a.device,
                          **{knob: value})
        blocks = [x[i:i + 65536] for i in range(0, x.shape[0], 65536)]
        try:
            sae = train_sae(blocks, cfg, Path(tmp) / "sae", resume=False, progress=False).to("cpu")
        except FloatingPointError as e:  # a diverged run is a row of the table, not a failed benchmark
            nan = float("nan")
            Path(a.worker).write_text(json.dumps({
                "architecture": a.architecture, "knob": knob, "value": value, "seed": a.seed, "samples": a.samples,
                "lr": a.lr, "true_l0": true_l0, "diverged": str(e), "l0": nan, "fvu": nan, "s_n": {str(n): nan for n in a.ns},
                "true_max_cos": nan, "recovered_0.9": nan, "on_target_share": nan, "steerable_0.9": nan, "erased": nan,
                "spill": nan}))
            return
    rec = recovery(sae.W_dec, D)
    f_sae, x_hat = codes(sae, held)
    steer = steerability(sae.W_dec, f_sae, f_held, D)
    fvu = float(((held - x_hat) ** 2).sum() / ((held - held.mean(0)) ** 2).sum())
    rows = {n: l0_sweep([("sae", sae)], held, n)["rows"][0] for n in a.ns}
    out = {"architecture": a.architecture, "knob": knob, "value": value, "seed": a.seed, "samples": a.samples, "lr": a.lr,
           "true_l0": true_l0, "l0": rows[a.ns[0]]["l0"], "fvu": fvu,
           "s_n": {str(n): r["s_n"] for n, r in rows.items()},
           "true_max_cos": rec["true_max_cos"], "recovered_0.9": rec["recovered"],
           "on_target_share": steer["on_target_share"], "steerable_0.9": steer["steerable"], "erased": steer["erased"],
           "spill": steer["spill"]}
    Path(a.worker).write_text(json.dumps(out))


def _key(arch: str, value: float, seed: int, samples: int, lr: float) -> tuple:
    return arch, float(value), int(seed), int(samples), float(lr)


def run_grid(a: argparse.Namespace, grid: dict[str, list[float]], done: list[dict]) -> list[dict]:
    """Train every (architecture, knob) of ``grid`` at seed 0 and the ``STEER`` knobs at ``--steer-seeds``,
    skipping the rows already in ``done`` (an earlier ``--json``: a stopped run resumes)."""
    jobs = [(arch, v, 0) for arch in a.architectures for v in grid[arch]]
    jobs += [(arch, v, sd) for arch in a.architectures for v in STEER[arch] for sd in a.steer_seeds if sd != 0]
    have = {_key(r["architecture"], r["value"], r.get("seed", 0), r["samples"], r["lr"]) for r in done}
    jobs = [j for j in jobs if _key(*j, a.samples, a.lr) not in have]
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for n, (arch, v, sd) in enumerate(jobs):
            cmd = [sys.executable, __file__, "--worker", f"{tmp}/{n}.json", "--architectures", arch, "--value", str(v),
                   "--seed", str(sd), "--samples", str(a.samples), "--lr", str(a.lr), "--device", a.device,
                   "--threads", str(a.threads), "--ns", *map(str, a.ns)]
            procs.append(subprocess.Popen(cmd))
            while sum(p.poll() is None for p in procs) >= a.jobs:
                procs[[p.poll() is None for p in procs].index(True)].wait()
        if any(p.wait() for p in procs):
            raise SystemExit("a worker failed")
        return done + [json.loads(Path(f"{tmp}/{n}.json").read_text()) for n in range(len(jobs))]


def _finite(r: dict) -> bool:
    return all(math.isfinite(r[k]) for k in ("l0", "fvu", "true_max_cos", "erased"))


def report(res: list[dict], n: int) -> str:
    """The markdown tables (the seed-0 sweep; steerability over seeds) and, per architecture, the L0
    that s_n picks."""
    true_l0 = res[0]["true_l0"]
    grid = [r for r in res if r.get("seed", 0) == 0]
    lines = [f"{res[0]['samples']:,} training samples, lr {res[0]['lr']:g}, d_sae 50; true L0 {true_l0:.2f}", "",
             f"| architecture | knob | L0 | FVU | true max cos | recovered > 0.9 | on-target share | erased | spill "
             f"| s_n (n={n}) |", "|---|---|---|---|---|---|---|---|---|---|"]
    verdict = []
    for arch in dict.fromkeys(r["architecture"] for r in grid):
        rows = sorted((r for r in grid if r["architecture"] == arch), key=lambda r: (not _finite(r), r["l0"]))
        for r in rows:
            if not _finite(r):
                lines.append(f"| {arch} | {r['knob']}={r['value']:g} | diverged (loss not finite) | | | | | | | |")
                continue
            lines.append(f"| {arch} | {r['knob']}={r['value']:g} | {r['l0']:.2f} | {r['fvu']:.3f} | "
                         f"{r['true_max_cos']:.3f} | {r['recovered_0.9']:.2f} | {r['on_target_share']:.3f} | "
                         f"{r['erased']:.3f} | {r['spill']:.3f} | {r['s_n'][str(n)]:+.4f} |")
        rows = [r for r in rows if _finite(r)]
        pick = min(rows, key=lambda r: r["s_n"][str(n)])
        best = max(rows, key=lambda r: r["true_max_cos"])
        at_truth = abs(pick["l0"] - true_l0) <= L0_TOLERANCE
        edge = pick is rows[0] or pick is rows[-1]
        verdict.append(f"- {arch}: s_n (n={n}) picks L0 {pick['l0']:.2f} ({pick['knob']}={pick['value']:g}): "
                       f"{'AT' if at_truth else 'NOT at'} the true L0 (within ±{L0_TOLERANCE:g})"
                       f"{'; the minimum is at the edge of the sweep' if edge else ''}; best recovery "
                       f"(true max cos {best['true_max_cos']:.3f}) at L0 {best['l0']:.2f}")
    lines += ["", *verdict, "", "Steerability near the true L0, mean ± sd over SAE seeds:", "",
              "| architecture | knob | seeds | L0 | on-target share | steerable > 0.9 | erased | spill |",
              "|---|---|---|---|---|---|---|---|"]
    for arch, values in STEER.items():
        for v in values:
            rows = [r for r in res if r["architecture"] == arch and float(r["value"]) == float(v) and _finite(r)]
            if not rows:
                continue
            t = {k: torch.tensor([r[k] for r in rows], dtype=torch.float64)
                 for k in ("l0", "on_target_share", "steerable_0.9", "erased", "spill")}
            ms = {k: f"{float(x.mean()):.3f} ± {float(x.std()) if len(x) > 1 else 0.0:.3f}" for k, x in t.items()}
            lines.append(f"| {arch} | {rows[0]['knob']}={v:g} | {len(rows)} | {float(t['l0'].mean()):.2f} | "
                         f"{ms['on_target_share']} | {ms['steerable_0.9']} | {ms['erased']} | {ms['spill']} |")
    return "\n".join(lines)


def plot(res: list[dict], n: int, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true_l0 = res[0]["true_l0"]
    panels = [("true_max_cos", "mean max |cos|, true features vs decoder"), ("recovered_0.9", "true features recovered > 0.9"),
              ("erased", "erasure: fraction of the feature removed"), (None, f"s_n, n = {n}")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (key, title) in zip(axes.flat, panels):
        for arch in dict.fromkeys(r["architecture"] for r in res):
            rows = sorted((r for r in res if r["architecture"] == arch and r.get("seed", 0) == 0 and _finite(r)),
                          key=lambda r: r["l0"])
            ys = [r["s_n"][str(n)] if key is None else r[key] for r in rows]
            ax.plot([r["l0"] for r in rows], ys, marker="o", label=arch)
        ax.axvline(true_l0, color="grey", ls="--", lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("L0 of the trained SAE")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Sparse but Wrong toy model (true L0 {true_l0:.1f}, dashed): every saesteer architecture")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--architectures", nargs="+", default=list(KNOBS), choices=list(KNOBS))
    ap.add_argument("--grid", default=None, help='JSON {"architecture": [knob values]} replacing the default sweep')
    ap.add_argument("--ns", type=int, nargs="+", default=[12, 15, 18, 21, 25],
                    help="s_n's n values (the paper's toy notebooks plot 12..25); the table uses --n")
    ap.add_argument("--n", type=int, default=18)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--png", default=str(DOCS / "toy_ground_truth.png"))
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--from-json", default=None, help="only redraw the report from an earlier --json")
    ap.add_argument("--steer-seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="SAE seeds for the steerability table (the sweep itself is seed 0)")
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--value", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.architecture = a.architectures[0]
        return worker(a)
    if a.from_json:
        res = json.loads(Path(a.from_json).read_text())
    else:
        done = json.loads(Path(a.json).read_text()) if a.json and Path(a.json).exists() else []
        res = run_grid(a, {**GRID, **(json.loads(a.grid) if a.grid else {})}, done)
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1))
    print(report(res, a.n))
    plot(res, a.n, a.png)


if __name__ == "__main__":
    main()
