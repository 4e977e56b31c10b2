"""What steering costs inside vLLM: greedy throughput of SmolLM2-135M-Instruct, steered vs unsteered,
at 1, 8 and 32 concurrent requests, in one run (run it in the vLLM virtualenv: ``make vllm-venv``).

    .venv-vllm/bin/python benchmarks/vllm_overhead.py                  # CPU, float32, 3 repetitions
    .venv-vllm/bin/python benchmarks/vllm_overhead.py --quick          # 1 repetition, concurrency 1 and 8
    python benchmarks/vllm_overhead.py --device cuda --tensor-parallel-size 2   # on a GPU machine

Each row runs C requests at once through ``LLM.generate`` (prompt 64 tokens, 32 new tokens each,
``ignore_eos``, so every row computes the same tokens). Rows: the bare engine (saesteer's extension
loaded, nothing attached: vLLM's own speed), SAEs attached but no edits, clamps of 1, 4 and 16 features
with the bundled TopK SAE (blocks.15) and with the same weights run as a JumpReLU SAE (blocks.14: only the
edited encoder columns), and Add edits of 1, 4, 16 features. Every request of a steered row carries the
edits. Timing is bracketed as in ``steering_overhead.py``: rows in a fresh random order per repetition,
the bare engine before each row and after the last; a row's ratio is the mean of the two bare runs around
it over its own time. The A/A control (the bare engine timed as a row) gives the noise; a target within
it of a row's median reads UNDECIDED.

The parts: the steering hook alone (``edit_activations`` on C fixed rows, min of 200 calls) vs one decode
step of the bare engine (from the bare rows: (t(33 tokens) - t(1 token)) / 32), and the overhead the two
imply, printed beside each end-to-end row. Targets (issue 18): JumpReLU clamps and Add >= 0.97x, TopK
clamps >= 0.90x, at 8 and more requests.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steering_overhead import as_jumprelu, clamp_features, verdict  # noqa: E402

import saesteer  # noqa: E402
from saesteer.edit_schema import from_json  # noqa: E402
from saesteer.embedded import default_sae_path  # noqa: E402
from saesteer.embedded.smollm2 import smollm2_path  # noqa: E402
from saesteer.integrations import vllm as sv  # noqa: E402
from saesteer.runtime.apply import edit_activations  # noqa: E402

TOPK, JUMP = "blocks.15.hook_resid_post", "blocks.14.hook_resid_post"
CONTROL = "bare engine (A/A control)"


def edit_rows(sae: saesteer.SAE) -> dict[str, dict | None]:
    rows: dict[str, dict | None] = {"attached, no edits": None}
    for n in (1, 4, 16):
        feats = clamp_features(sae, n)
        clamp = [{"op": "clamp", "feature": f, "value": v, "hook": TOPK} for f, v in feats.items()]
        rows[f"TopK clamp {n}"] = {"edits": clamp}
        rows[f"JumpReLU clamp {n}"] = {"edits": [{**e, "hook": JUMP} for e in clamp]}
        rows[f"Add {n}"] = {"edits": [{"op": "add", "feature": f, "amount": v, "hook": TOPK} for f, v in feats.items()]}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 repetition, concurrency 1 and 8")
    ap.add_argument("--device", default="cpu", help="where the hook-alone timing runs (vLLM picks its own)")
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    if args.quick:
        args.reps, args.concurrency = 1, [c for c in args.concurrency if c <= 8]
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    sae = saesteer.load_sae(default_sae_path())
    jump = as_jumprelu(sae)
    tmp = tempfile.mkdtemp(prefix="saesteer-bench-")
    saesteer.save_sae(jump, Path(tmp) / "jumprelu")
    dtype = "float32" if args.device == "cpu" else "bfloat16"
    llm = LLM(model=str(smollm2_path()), dtype=dtype, max_model_len=512, seed=0, max_num_seqs=max(args.concurrency),
              tensor_parallel_size=args.tensor_parallel_size, enable_prefix_caching=False, **sv.engine_args())
    tok = llm.get_tokenizer()
    base = tok("The history of the sea, told by the lighthouse keepers who watched it for three centuries: ")["input_ids"]
    rows = edit_rows(sae)

    def attach() -> None:
        if not sv.stats(llm)[0]["attachments"]:
            sv.attach(llm, str(default_sae_path()), TOPK)
            sv.attach(llm, str(Path(tmp) / "jumprelu"), JUMP)

    def bare() -> None:
        if sv.stats(llm)[0]["attachments"]:
            sv.detach(llm)

    def run(c: int, obj: dict | None, n: int) -> float:
        prompts = [TokensPrompt(prompt_token_ids=(base * 8)[i: i + 64]) for i in range(c)]
        params = sv.sampling_params(obj, max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0)
        t = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - t

    results: dict[int, dict[str, list[float]]] = {}
    for c in args.concurrency:
        attach()
        for obj in rows.values():  # warm-up
            run(c, obj, 4)
        bare()
        run(c, None, 4)
        ratios: dict[str, list[float]] = {k: [] for k in (CONTROL, *rows)}
        secs: dict[str, list[float]] = {k: [] for k in ratios}
        one_tok: list[float] = []
        rng = random.Random(c)
        for rep in range(args.reps):
            order = list(ratios)
            rng.shuffle(order)
            bare()
            prev = run(c, None, args.new_tokens)
            for name in order:
                (bare if name == CONTROL else attach)()
                t = run(c, rows.get(name), args.new_tokens)
                bare()
                nxt = run(c, None, args.new_tokens)
                ratios[name].append((prev + nxt) / 2 / t)
                secs[name].append(t)
                prev = nxt
            one_tok.append(min(run(c, None, 1) for _ in range(3)))
            print(f"  concurrency {c}: repetition {rep + 1}/{args.reps} done", file=sys.stderr, flush=True)
        step = max((statistics.median(secs[CONTROL]) - statistics.median(one_tok)) / (args.new_tokens - 1), 1e-9)
        results[c] = {k: v for k, v in ratios.items()}
        report(c, ratios, secs, step, hook_times(sae, jump, rows, c, args.device), args.new_tokens)
    print("\nTargets (issue 18), at 8+ requests:")
    for c, rs in results.items():
        if c < 8:
            continue
        _, lo, hi = _stats(rs[CONTROL])
        noise = (hi - lo) / 2
        for name, r in rs.items():
            target = 0.90 if name.startswith("TopK") else 0.97 if name.startswith(("JumpReLU", "Add")) else None
            if target is not None:
                print(f"  c{c} {name}: {_stats(r)[0]:.3f} vs >= {target:.2f} (noise +-{noise:.3f}): "
                      f"{verdict(_stats(r)[0], target, noise)}")


def _stats(r: list[float]) -> tuple[float, float, float]:
    return statistics.median(r), min(r), max(r)


def hook_times(sae: saesteer.SAE, jump: saesteer.SAE, rows: dict[str, dict | None], c: int,
               device: str) -> dict[str, float]:
    """Seconds of one hook call per row: ``edit_activations`` on C decode rows, min of 200 calls."""
    out = {}
    x = torch.randn(c, 1, sae.d_in, device=device) * 3
    pos = torch.full((c, 1), 70, device=device)
    valid = torch.ones(c, 1, dtype=torch.bool, device=device)
    plen = torch.full((c,), 64, device=device)
    saes = {TOPK: sae.to(device), JUMP: jump.to(device)}
    for name, obj in rows.items():
        if obj is None:
            continue
        es = from_json(obj)
        hook = es.edits[0].hook
        part = es.for_hook(hook, False)
        fn: Callable[[], Any] = lambda: edit_activations(saes[hook], x, part, lambda p: p.mask(pos, valid, plen))  # noqa: E731
        for _ in range(10):
            fn()
        best = float("inf")
        with torch.no_grad():
            for _ in range(200):
                if device != "cpu":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if device != "cpu":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t)
        out[name] = best
    return out


def report(c: int, ratios: dict[str, list[float]], secs: dict[str, list[float]], step: float,
           hooks: dict[str, float], n: int) -> None:
    print(f"\n{c} concurrent request(s), {n} new tokens each: tokens/s (median) and speed relative to the bare "
          f"engine, median [range] of {len(ratios[CONTROL])} bracketed repetitions; one bare decode step "
          f"{step * 1e3:.2f} ms")
    print("| row | tokens/s | x bare | hook alone | overhead the parts imply |\n|---|---|---|---|---|")
    for name, r in ratios.items():
        m, lo, hi = _stats(r)
        h = hooks.get(name)
        parts = f"{h * 1e6:.0f} us | {1 / (1 + h / step):.3f}x" if h is not None else "- | -"
        print(f"| {name} | {c * n / statistics.median(secs[name]):.1f} | {m:.3f} [{lo:.3f}, {hi:.3f}] | {parts} |")


if __name__ == "__main__":
    main()
