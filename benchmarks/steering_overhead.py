"""What steering costs: greedy ``generate`` throughput of SmolLM2-135M-Instruct with the bundled SAE,
saesteer side by side with the peers, in one run.

    python benchmarks/steering_overhead.py                 # CPU, bf16, batch 1 and 8, 5 repetitions
    python benchmarks/steering_overhead.py --device cuda   # where a GPU exists
    python benchmarks/steering_overhead.py --quick         # 3 repetitions, fewer rows: a smoke run
    python benchmarks/steering_overhead.py --per-step --reps 9 --no-memory   # single decoding steps

Prompt 128 tokens, 64 new tokens (``min_new_tokens`` = ``max_new_tokens``, so every row generates
the same number), batch 1 and 8. Timing is bracketed: in every repetition the rows run in a fresh
random order, and before each row and after the last the bare model runs again; a row's ratio is
the mean of the two bare runs around it divided by its own time, so a noisy machine's drifts (which
are slower than one generate) cancel. Each figure is the median of its per-repetition ratios, with
their range. A control row, "bare model (A/A control)", is the bare model timed as if it were a
row: its true ratio is exactly 1, so its range is the measurement's noise, and a target closer to
a row's median than that noise is reported "UNDECIDED" instead of PASS or FAIL. Wall time and the
process's CPU time (all threads) are both recorded (``--json``); ``--clock cpu`` rates by CPU time.
``--per-step`` times units of 16 single KV-cached decoding steps instead of whole generates: each unit
lasts ~0.5 s, so its bracketing bare runs are closer in time and the noise is smaller. The prefill is
left out, and so is nnsight, whose trace wraps a whole call. It also prints how far saesteer's steered
logits are from the sae-lens hook's for the same clamp: the two must do the same edit.

Rows: (a) the bare model; (b) saesteer attached, no edits; (c) saesteer clamping 1, 4, 16 features
with the bundled TopK SAE, and with the same weights run as a JumpReLU SAE (the fast path: only the
edited encoder columns); (d) the same clamps with a sae-lens SAE object inside a plain forward hook,
error term kept; (e) the same clamps inside an nnsight generate trace; (f) Add edits of 1, 4, 16
features, saesteer vs steering-vectors. Peak memory: each of bare and saesteer (16 clamps) in a fresh
child process, the high-water mark of resident memory during one generate (Linux VmHWM). It is steady
state: each child runs its generate once to warm up (allocator pools, oneDNN
kernel caches, lazy imports: one-time costs of any first call), returns freed heap pages to the system
(``malloc_trim``), resets the high-water mark and runs it again. The saesteer child holds the SAE throughout, so the difference is the SAE's weights plus what
steering allocates per call. ``--memory-widths 1,4`` repeats this with a random SAE 4x wider than the
bundled one: what grows with the SAE is its weights; the rest is a fixed cost (kernel caches for the
SAE's matmul shapes, modules). Targets (printed PASS/FAIL, never asserted in tests) are those of issue 4.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402

import saesteer  # noqa: E402
from saesteer.embedded import default_sae_path  # noqa: E402
from saesteer.embedded.smollm2 import load_smollm2  # noqa: E402

LAYER = 15  # the bundled SAE reads blocks.15.hook_resid_post = the output of decoder layer 15
COUNTS = (1, 4, 16)
TEXT = (
    "The harbour town woke slowly. Fishermen carried nets down the stone steps while the baker "
    "opened his shutters and the smell of bread drifted over the water. Children ran along the "
    "quay, chasing gulls that rose and settled again on the masts. An old woman sat on a bench "
    "mending a sail, counting stitches under her breath, and a dog slept in the sun beside her. "
    "Out past the breakwater the sea was grey and calm, and a ferry made its way towards the "
    "islands, leaving a long white wake. In the square the market stalls filled with apples, "
    "cheese, eggs and flowers; traders called out prices and neighbours stopped to talk about the "
    "weather, the catch, the price of fuel and the new road being built over the hill. By noon the "
    "clouds had cleared, the bells of the church rang twelve, and the whole town paused for lunch. "
    "In the afternoon a schoolteacher took her class to the lighthouse, where the keeper explained "
    "how the lamp turned, how far its light could be seen, and how ships had once been wrecked on "
    "the rocks below before the tower was built. The children drew pictures of the lamp and the "
    "waves, and asked whether the keeper ever felt lonely on stormy nights."
)


def prompts(tok: Any, batch: int, length: int) -> dict[str, torch.Tensor]:
    """``batch`` different windows of ``length`` tokens from TEXT (repeated as needed)."""
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    while len(ids) < length + 7 * batch:
        ids = ids + ids
    rows = [ids[7 * r: 7 * r + length] for r in range(batch)]
    t = torch.tensor(rows)
    return {"input_ids": t, "attention_mask": torch.ones_like(t)}


def clamp_features(sae: saesteer.SAE, n: int) -> dict[int, float]:
    """The ``n`` densest features (they fire often, so the clamp changes something), each clamped to
    its largest activation seen when labelling."""
    labels = sae.labels
    order = sorted(labels, key=lambda f: -labels.info(f)["density"])[:n]
    return {f: float(labels.info(f)["max_activation"]) for f in order}


def as_jumprelu(sae: saesteer.SAE) -> saesteer.SAE:
    """The same weights run as a JumpReLU SAE (threshold 0 keeps what ReLU keeps): the fast path."""
    import dataclasses

    cfg = dataclasses.replace(sae.cfg, architecture="jumprelu", k=None)
    out = saesteer.SAE(cfg, dtype=sae.dtype)
    out.load_state_dict({**sae.state_dict(), "threshold": torch.zeros(sae.d_sae, dtype=sae.dtype)})
    out.labels = sae.labels
    return out


def step_calls(args: argparse.Namespace, model: Any, enc: dict[str, torch.Tensor]) -> tuple[Any, Any, Any]:
    """``(plain, steered, unit)`` for ``--per-step``: one KV-cached decoding step after the prompt, bare
    or through a SteeredModel, and ``unit(call)``: ``--step-repeats`` such steps, the cache cropped back
    after each. A unit lasts ~0.5 s instead of ~2-8 s, so the bracketing bare runs are closer in time;
    the prefill is left out. nnsight has no per-step form (its trace wraps a whole call)."""
    with torch.no_grad():
        first = model(**enc, use_cache=True)
    cache, length = first.past_key_values, enc["input_ids"].shape[1]
    step = {"input_ids": first.logits[:, -1:].argmax(-1), "past_key_values": cache, "use_cache": True,
            "attention_mask": torch.ones(len(enc["input_ids"]), length + 1, dtype=torch.long, device=model.device)}

    def rewind() -> None:  # drop the step's token: crop(-n) means "remove n" in every transformers version
        extra = cache.get_seq_length() - length
        if extra:
            cache.crop(-extra)

    def unit(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with torch.no_grad():
                for _ in range(args.step_repeats):
                    out = call()
                    rewind()
            return out
        return run

    return (lambda: model(**step)), (lambda sm, edits=None: sm(**step, edits=edits)), unit


def build_rows(args: argparse.Namespace, model: Any, tok: Any, batch: int) -> dict[str, Callable[[], Any]]:
    """Every row as a zero-argument runner: one greedy ``generate``, or with ``--per-step`` a unit of
    single decoding steps (:func:`step_calls`)."""
    device, dtype = model.device, model.dtype
    enc = {k: v.to(device) for k, v in prompts(tok, batch, args.prompt_len).items()}
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
               pad_token_id=tok.eos_token_id)
    if args.per_step:
        plain, steered, unit = step_calls(args, model, enc)
    else:
        plain = lambda: model.generate(**enc, **gen)  # noqa: E731
        steered = lambda sm, edits=None: sm.generate(**enc, **gen, edits=edits)  # noqa: E731
        unit = lambda call: lambda: _nograd(call)  # noqa: E731
    folder = str(default_sae_path())
    sm = saesteer.wrap(model, folder, layer=LAYER)
    jr = saesteer.wrap(model, as_jumprelu(sm.sae), layer=LAYER)
    rows: dict[str, Callable[[], Any]] = {"bare model": unit(plain),
                                          "saesteer, attached, no edits": unit(lambda: steered(sm))}
    lens = None if args.no_peers else peers.saelens_sae(folder, dtype).to(device)
    lm = None
    if not args.no_peers and not args.quick and not args.per_step:
        import nnsight

        cls = getattr(nnsight, "TransformersModel", None) or nnsight.LanguageModel
        lm = cls(model, tokenizer=tok)
    for n in COUNTS:
        clamps = clamp_features(sm.sae, n)
        idx = torch.tensor(list(clamps), device=device)
        vals = torch.tensor(list(clamps.values()), device=device, dtype=dtype)
        rows[f"saesteer, TopK, clamp {n}"] = unit(lambda c=clamps: steered(sm, c))
        rows[f"saesteer, JumpReLU, clamp {n}"] = unit(lambda c=clamps: steered(jr, c))
        if lens is not None:
            rows[f"sae-lens hook, TopK, clamp {n}"] = unit(
                peers.saelens_hooked(model.model.layers[LAYER], lens, idx, vals, plain))
            if args.per_step:  # the two must do the same edit: compare their steered logits
                ours = rows[f"saesteer, TopK, clamp {n}"]().logits
                theirs = rows[f"sae-lens hook, TopK, clamp {n}"]().logits
                print(f"  clamp {n}: saesteer vs sae-lens step logits, max |diff| {float((ours - theirs).abs().max()):.3g} "
                      f"(bare vs steered: {float((unit(plain)().logits - ours).abs().max()):.3g})", file=sys.stderr)
        if lm is not None:
            rows[f"nnsight trace, TopK, clamp {n}"] = peers.nnsight_trace(lm, LAYER, lens, idx, vals, gen, enc)
        adds = [saesteer.Add(f, 4.0) for f in clamps]
        rows[f"saesteer, Add {n}"] = unit(lambda a=adds: steered(sm, a))
        if not args.no_peers:
            vec = 4.0 * sm.sae.W_dec[idx].sum(0)
            rows[f"steering-vectors, Add {n}"] = unit(peers.steering_vectors_applied(model, LAYER, vec, plain))
    return rows


def _nograd(call: Callable[[], Any]) -> Any:
    with torch.no_grad():
        return call()


CONTROL = "bare model (A/A control)"


def time_rows(rows: dict[str, Callable[[], Any]], reps: int, sync: Callable[[], None],
              seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """``{row: {"wall": [...], "cpu": [...], "ref_wall": [...], "ref_cpu": [...]}}`` per repetition:
    each row's seconds and the mean of the bare runs just before and after it (see the docstring)."""
    for fn in rows.values():  # warm-up: first-call costs (allocator, kernels, nnsight setup)
        fn()
    bare = rows["bare model"]
    timed = {CONTROL: bare, **{k: v for k, v in rows.items() if k != "bare model"}}
    out: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": [], "ref_wall": [], "ref_cpu": []} for k in timed}
    rng = random.Random(seed)

    def run(fn: Callable[[], Any]) -> tuple[float, float]:
        sync()
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        return time.perf_counter() - w, time.process_time() - c

    for rep in range(reps):
        order = list(timed)
        rng.shuffle(order)
        prev = run(bare)
        for name in order:
            t = run(timed[name])
            nxt = run(bare)
            rec = out[name]
            rec["wall"].append(t[0])
            rec["cpu"].append(t[1])
            rec["ref_wall"].append((prev[0] + nxt[0]) / 2)
            rec["ref_cpu"].append((prev[1] + nxt[1]) / 2)
            prev = nxt
        print(f"  repetition {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    return out


def wider_sae(sae: saesteer.SAE, factor: int, folder: Path) -> Path:
    """A TopK SAE like ``sae`` but ``factor`` times wider, random weights of the same scale, saved to
    ``folder``: to tell a fixed memory cost of steering from one that grows with the SAE."""
    import dataclasses

    g = torch.Generator().manual_seed(factor)
    d_sae = sae.d_sae * factor
    wide = saesteer.SAE(dataclasses.replace(sae.cfg, d_sae=d_sae, metadata={}), dtype=sae.dtype)
    with torch.no_grad():
        scale = float(sae.W_enc.float().std())
        wide.W_enc.copy_(torch.randn(sae.d_in, d_sae, generator=g) * scale)
        wide.W_dec.copy_(torch.randn(d_sae, sae.d_in, generator=g) * float(sae.W_dec.float().std()))
        wide.b_dec.copy_(sae.b_dec)
    return saesteer.save_sae(wide, folder)


def peak_rss_child(args: argparse.Namespace, tool: str, batch: int, edits: dict[int, float],
                   sae_path: Path | None = None) -> int:
    """VmHWM (bytes) of one generate in a fresh process, reset after loading and a warm-up. The edits
    are chosen here: reading the labels to choose them would leave ~10 MB of freed Python objects in
    the child's heap, which is the benchmark's cost, not steering's."""
    cmd = [sys.executable, __file__, "--rss-child", tool, "--batch", str(batch), "--dtype", args.dtype,
           "--device", args.device, "--new-tokens", str(args.new_tokens), "--prompt-len", str(args.prompt_len),
           "--edits-json", json.dumps(edits), "--sae-path", str(sae_path or default_sae_path())]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["hwm"])


def rss_child(args: argparse.Namespace) -> None:
    model, tok = load(args)
    enc = prompts(tok, args.batch, args.prompt_len)
    gen = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
               pad_token_id=tok.eos_token_id)
    if args.rss_child == "saesteer":
        sm = saesteer.wrap(model, args.sae_path, layer=LAYER)
        edits = {int(k): float(v) for k, v in json.loads(args.edits_json).items()}
        run = lambda: sm.generate(**enc, **gen, edits=edits)  # noqa: E731
    else:
        run = lambda: _nograd(lambda: model.generate(**enc, **gen))  # noqa: E731
    run()  # warm-up: the allocator, oneDNN's kernel caches and lazy imports settle, as in a serving process
    gc.collect()
    try:  # glibc keeps freed heap pages; hand them back so both children start from what is live
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    run()
    hwm = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    print(json.dumps({"hwm": hwm}))


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    model, tok = load_smollm2(dtype=dtype, device=args.device)
    return model, tok


def ratios(rec: dict[str, list[float]], clock: str) -> list[float]:
    """Per-repetition speed relative to the bare model: the bracketing bare runs' time / the row's."""
    return [r / t for r, t in zip(rec[f"ref_{clock}"], rec[clock])]


def report(times: dict[str, dict[str, list[float]]], batch: int, new_tokens: int,
           clock: str) -> dict[str, tuple[float, float, float]]:
    """Print the table; return each row's ``(median, min, max)`` ratio on ``clock``."""
    out = {}
    print(f"\nbatch {batch}: tokens/s (median) and speed relative to the bare model, median [range] of "
          f"{len(times[CONTROL]['wall'])} bracketed repetitions")
    print("| row | tokens/s | x bare, wall | x bare, CPU time |\n|---|---|---|---|")
    for k, rec in times.items():
        cells = []
        for c in ("wall", "cpu"):
            r = ratios(rec, c)
            cells.append(f"{statistics.median(r):.3f} [{min(r):.3f}, {max(r):.3f}]")
        r = ratios(rec, clock)
        out[k] = (statistics.median(r), min(r), max(r))
        print(f"| {k} | {batch * new_tokens / statistics.median(rec['wall']):.1f} | {cells[0]} | {cells[1]} |")
    return out


def verdict(value: float, target: float, noise: float) -> str:
    """PASS / FAIL, or UNDECIDED when the target lies within the control's noise of the value."""
    if abs(value - target) <= noise:
        return "UNDECIDED"
    return "PASS" if value >= target else "FAIL"


def noise_of(r: dict[str, tuple[float, float, float]]) -> float:
    """Half the range of the A/A control's per-repetition ratios (its true value is exactly 1)."""
    _, lo, hi = r[CONTROL]
    return (hi - lo) / 2


def targets(all_ratios: dict[int, dict[str, tuple[float, float, float]]]) -> list[tuple[str, str]]:
    """``(description, PASS | FAIL | UNDECIDED)`` for issue 4's speed targets at every batch size."""
    checks: list[tuple[str, str]] = []
    for b, full in all_ratios.items():
        noise = noise_of(full)
        r = {k: v[0] for k, v in full.items()}
        checks.append((f"b{b}: A/A control reads {r[CONTROL]:.3f}; noise +-{noise:.3f}", "INFO"))

        def check(text: str, value: float, target: float) -> None:
            checks.append((f"b{b}: {text} ({value:.3f} vs {target:.3f})", verdict(value, target, noise)))

        check("zero edits >= 0.99x", r["saesteer, attached, no edits"], 0.99)
        for n in COUNTS:
            tk = r[f"saesteer, TopK, clamp {n}"]
            check(f"JumpReLU clamp {n} >= 0.97x", r[f"saesteer, JumpReLU, clamp {n}"], 0.97)
            check(f"TopK clamp {n} >= 0.93x", tk, 0.93)
            for peer in (f"sae-lens hook, TopK, clamp {n}", f"nnsight trace, TopK, clamp {n}"):
                if peer in r:
                    check(f"saesteer TopK clamp {n} >= {peer}", tk, r[peer])
            sv = f"steering-vectors, Add {n}"
            if sv in r:
                check(f"saesteer Add {n} >= {sv}", r[f"saesteer, Add {n}"], r[sv])
    return checks


def memory_rows(args: argparse.Namespace, dtype: torch.dtype) -> list[tuple[str, str]]:
    """Peak RSS of bare vs saesteer (16 clamps) children for every batch and SAE width factor in
    ``--memory-widths``; the target applies to the bundled SAE (factor 1), wider random SAEs show
    which part of the difference is fixed and which grows with the SAE."""
    import tempfile

    checks: list[tuple[str, str]] = []
    sae = saesteer.load_sae(default_sae_path(), dtype=dtype)
    edits = clamp_features(sae, 16)
    with tempfile.TemporaryDirectory() as tmp:
        for factor in (int(w) for w in args.memory_widths.split(",")):
            path = default_sae_path() if factor == 1 else wider_sae(sae, factor, Path(tmp) / f"x{factor}")
            sae_bytes = (sae.d_sae * factor * (2 * sae.d_in + 1) + sae.d_in) * dtype.itemsize  # W_enc, W_dec, b_enc, b_dec
            for batch in (int(b) for b in args.batches.split(",")):
                bare = peak_rss_child(args, "bare", batch, edits)
                ours = peak_rss_child(args, "saesteer", batch, edits, path)
                extra = (ours - bare) / sae_bytes
                name = "the bundled SAE" if factor == 1 else f"a {factor}x wider random SAE"
                print(f"\npeak RSS, batch {batch}, {name} ({sae_bytes / 2**20:.1f} MiB): bare {bare / 2**20:.1f} MiB, "
                      f"saesteer 16 clamps {ours / 2**20:.1f} MiB: +{(ours - bare) / 2**20:.1f} MiB = {extra:.2f}x "
                      f"the SAE's weights, {(ours - bare - sae_bytes) / 2**20:+.1f} MiB beyond them")
                text = f"b{batch}: peak memory above bare <= 1.2x SAE size ({name}: {extra:.2f}x)"
                checks.append((text, ("PASS" if extra <= 1.2 else "FAIL") if factor == 1 else "INFO"))
    return checks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp32", "fp16"))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="3 repetitions, no nnsight rows")
    p.add_argument("--no-peers", action="store_true", help="saesteer rows only")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory rows (load-insensitive)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="what the ratios and targets use")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--per-step", action="store_true",
                   help="time single KV-cached decoding steps instead of whole generates (less noise; no nnsight)")
    p.add_argument("--step-repeats", type=int, default=16, help="decoding steps per timed unit with --per-step")
    p.add_argument("--memory-widths", default="1,4",
                   help="SAE width factors for the memory rows (1: the bundled SAE; others: random, wider)")
    p.add_argument("--json", help="also write every row's raw seconds per repetition to this file")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--edits-json", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--sae-path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        return rss_child(args)
    if args.quick:
        args.reps = min(args.reps, 3)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load(args)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    threads = torch.get_num_threads()
    print(f"SmolLM2-135M-Instruct {args.dtype} on {args.device} ({threads} threads, {os.cpu_count()} CPUs), "
          f"bundled SAE (TopK k=32, 4608 x 576), prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"{args.reps} repetitions; torch {torch.__version__}")
    all_ratios: dict[int, dict[str, float]] = {}
    for batch in (int(b) for b in args.batches.split(",") if not args.memory_only):
        rows = build_rows(args, model, tok, batch)
        times = time_rows(rows, args.reps, sync, seed=batch)
        all_ratios[batch] = report(times, batch, args.step_repeats if args.per_step else args.new_tokens, args.clock)
        if args.json:
            raw = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
            raw[f"batch {batch}"] = times
            Path(args.json).write_text(json.dumps(raw, indent=1))
    checks = targets(all_ratios)
    if not args.no_memory and Path("/proc/self/clear_refs").exists() and args.device == "cpu":
        checks += memory_rows(args, model.dtype)
    print("\ntargets:")
    for text, ok in checks:
        print(f"  {ok:9s}  {text}")


if __name__ == "__main__":
    main()
