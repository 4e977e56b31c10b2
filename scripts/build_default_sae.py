"""Rebuild the SAE that ships with saesteer for SmolLM2-135M-Instruct, from offline sources only.

    python scripts/build_corpus.py --out ~/.cache/saesteer/corpus          # ~1 min, once
    python scripts/build_default_sae.py                                     # all stages, resumable

Stages (each skipped when its output exists; ``--stages`` picks some):
  acts    run SmolLM2 (bf16) over the corpus' train split and cache its activations at HOOK
          (bf16 safetensors shards, position 0 of every chunk dropped: the attention sink)
  train   train a TopK SAE on the cached activations (saesteer.train, AuxK, unit-norm decoder),
          then measure it on held-out text: L0, FVU, dead fraction, CE-loss recovered (the
          reconstruction spliced in with saesteer itself), written into its training card
  labels  per feature: top-activating held-out contexts, top logit-effect tokens, source mix
  export  fp16 weights + card + labels into saesteer/embedded/assets/<name>/
  check   re-measure the exported (fp16) SAE on held-out text and print PASS/FAIL against the
          targets: FVU <= 0.25 (over ordinary tokens: the few attention-sink tokens with ~100x
          norms are left out, see saesteer.train.metrics), dead latents <= 5%, CE-loss recovered
          >= 80% (every token spliced, sinks included)
          (``python scripts/build_default_sae.py --stages check`` needs only the corpus)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

HOOK = "blocks.15.hook_resid_post"
NAME = "smollm2-135m-it-l15-topk32-4608"
ASSETS = Path(__file__).resolve().parents[1] / "saesteer" / "embedded" / "assets" / NAME


def _args(argv: list[str] | None) -> argparse.Namespace:
    cache = Path(os.environ.get("SAESTEER_CACHE", Path.home() / ".cache" / "saesteer"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=os.environ.get("SAESTEER_CORPUS", str(cache / "corpus")))
    p.add_argument("--work", default=str(cache / f"build-{NAME}"), help="activation cache and training run")
    p.add_argument("--out", default=str(ASSETS))
    p.add_argument("--stages", default="acts,train,labels,export,check")
    p.add_argument("--tokens", type=int, default=2_200_000, help="distinct training activations")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--eval-chunks", type=int, default=96, help="held-out chunks for the card's figures")
    p.add_argument("--dead-batches", type=int, default=25, help="x16 held-out chunks for the dead count")
    p.add_argument("--label-docs", type=int, default=1000, help="held-out documents for the labels")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def stage_acts(a: argparse.Namespace, model, tok) -> Path:
    from saesteer.data import iter_corpus
    from saesteer.train import ActivationSource
    from saesteer.train.cache import is_complete_cache

    folder = Path(a.work) / "acts"
    if is_complete_cache(folder):
        print(f"[acts] cached at {folder}")
        return folder
    src = ActivationSource(model, HOOK, iter_corpus(a.corpus, "train"), tokenizer=tok, context_length=a.context,
                           model_batch=16, drop_first=True, model_name="SmolLM2-135M-Instruct")
    t0 = time.perf_counter()
    src.cache(folder, max_tokens=a.tokens, dtype=torch.bfloat16)
    print(f"[acts] {a.tokens} activations in {time.perf_counter() - t0:.0f} s")
    return folder


def heldout_chunks(a: argparse.Namespace, model, tok) -> torch.Tensor:
    """The first ``--eval-chunks`` packed ``[context]`` chunks of the held-out split."""
    from saesteer.data import iter_corpus
    from saesteer.train import ActivationSource

    src = ActivationSource(model, HOOK, iter_corpus(a.corpus, "heldout"), tokenizer=tok, context_length=a.context)
    return torch.stack(list(src.chunks(stop=a.eval_chunks)))


def stage_train(a: argparse.Namespace, model, tok, acts: Path) -> Path:
    from saesteer.train import CachedActivations, TrainConfig, evaluate_sae, train_sae

    out = Path(a.work) / "sae"
    if (out / "training_card.json").is_file() and json.loads((out / "training_card.json").read_text()).get("finished"):
        print(f"[train] done at {out}")
        return out
    cfg = TrainConfig(architecture="topk", d_sae=a.d_sae, k=a.k, batch_tokens=4096,
                      total_tokens=a.tokens * a.epochs, encode_dtype="bfloat16",
                      hook_name=HOOK, model_name="SmolLM2-135M-Instruct")
    ids = heldout_chunks(a, model, tok)

    def evaluate(sae):  # held-out figures for the card
        return evaluate_sae(sae, model, HOOK, ids, batch_size=8, drop_first=True)

    command = "python scripts/build_default_sae.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    train_sae(CachedActivations(acts, buffer_tokens=1 << 19, seed=0), cfg, out, evaluate=evaluate,
              command=command.strip())
    return out


def stage_labels(a: argparse.Namespace, model, tok, sae_dir: Path) -> Path:
    from saesteer.data.corpus import iter_records
    from saesteer.labeling import label_features
    from saesteer.labels import FILE
    from saesteer.sae import load_sae

    if (sae_dir / FILE).is_file():
        print(f"[labels] done at {sae_dir / FILE}")
        return sae_dir
    docs = [(r["text"], r["source"]) for r in iter_records(a.corpus, "heldout")][: a.label_docs]
    sae = load_sae(sae_dir)
    labels = label_features(model, tok, sae, HOOK, docs, context=128, batch_size=16)
    labels.meta.update(corpus_split="heldout", model="SmolLM2-135M-Instruct")
    labels.save(sae_dir)
    return sae_dir


def stage_export(a: argparse.Namespace, sae_dir: Path) -> Path:
    import shutil

    from saesteer.sae import load_sae, save_sae

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sae = load_sae(sae_dir, dtype=torch.float16)
    save_sae(sae, out)
    for name in ("training_card.json", "README.md", "feature_labels.json.gz"):
        shutil.copy2(sae_dir / name, out / name)
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"[export] {out} ({size:.1f} MiB)")
    return out


TARGETS = {"fvu_inliers": ("<=", 0.25), "dead_fraction": ("<=", 0.05), "ce_loss_recovered": (">=", 0.80)}


def stage_check(a: argparse.Namespace, model, tok) -> bool:
    from saesteer.sae import load_sae
    from saesteer.train import evaluate_sae

    import itertools

    from saesteer.data import iter_corpus
    from saesteer.train import ActivationSource, activation_metrics

    sae = load_sae(a.out).float()
    ids = heldout_chunks(a, model, tok)
    m = evaluate_sae(sae, model, HOOK, ids, batch_size=8, drop_first=True)
    # dead latents need more tokens than the CE splice: one cheap pass up to the hook
    src = ActivationSource(model, HOOK, iter_corpus(a.corpus, "heldout"), tokenizer=tok, context_length=a.context,
                           model_batch=16, drop_first=True)
    wide = activation_metrics(sae, itertools.islice(src.raw_blocks(), a.dead_batches))
    m["dead_fraction"], m["dead_eval_tokens"] = wide["dead_fraction"], wide["eval_tokens"]
    print(f"[check] {a.out}: CE/FVU on {ids.numel()} held-out tokens, dead latents on {wide['eval_tokens']}; "
          f"model {next(model.parameters()).dtype}")
    card_path = Path(a.out) / "training_card.json"
    card = json.loads(card_path.read_text())
    card["heldout_check"] = {**{k: float(v) for k, v in m.items()}, "model_dtype": str(next(model.parameters()).dtype),
                             "targets": {k: f"{op} {b}" for k, (op, b) in TARGETS.items()},
                             "command": "python scripts/build_default_sae.py --stages check"}
    card_path.write_text(json.dumps(card, indent=1))
    write_check_readme(Path(a.out), card)
    ok = True
    for key, value in sorted(m.items()):
        if key in TARGETS:
            op, bound = TARGETS[key]
            good = value <= bound if op == "<=" else value >= bound
            ok &= good
            print(f"  {key:>20} = {value:.4f}   target {op} {bound}   {'PASS' if good else 'FAIL'}")
        else:
            print(f"  {key:>20} = {value:.4f}")
    return ok


def write_check_readme(out: Path, card: dict) -> None:
    """Append (or replace) the held-out check table in the SAE folder's README.md."""
    c = card["heldout_check"]
    readme = out / "README.md"
    text = readme.read_text().split("\n## Held-out check")[0].rstrip() + "\n"
    rows = [("FVU, ordinary tokens (target <= 0.25)", c["fvu_inliers"]),
            ("FVU, all tokens incl. attention sinks", c["fvu"]),
            ("share of attention-sink tokens left out of the first", c["outlier_fraction"]),
            (f"dead latents on {int(c['dead_eval_tokens'])} tokens (target <= 0.05)", c["dead_fraction"]),
            ("CE-loss recovered (target >= 0.80)", c["ce_loss_recovered"]),
            ("CE clean / spliced / zero-ablated", f"{c['ce_clean']:.3f} / {c['ce_spliced']:.3f} / {c['ce_zero_ablated']:.3f}")]
    table = "\n".join(f"| {k} | {v if isinstance(v, str) else f'{v:.4g}'} |" for k, v in rows)
    readme.write_text(text + f"\n## Held-out check\n\nThe exported fp16 SAE re-measured on the corpus' held-out "
                      f"split ({c['model_dtype']} model) by `{c['command']}`:\n\n| metric | value |\n|---|---|\n"
                      f"{table}\n\nRebuild from nothing: `python scripts/build_corpus.py --out "
                      f"~/.cache/saesteer/corpus && python scripts/build_default_sae.py` (about 45 min on 2 CPU cores).\n")


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    stages = set(a.stages.split(","))
    from saesteer.embedded import load_smollm2

    model, tok = load_smollm2(dtype=torch.bfloat16)
    acts = stage_acts(a, model, tok) if "acts" in stages else Path(a.work) / "acts"
    sae_dir = stage_train(a, model, tok, acts) if "train" in stages else Path(a.work) / "sae"
    if "labels" in stages:
        stage_labels(a, model, tok, sae_dir)
    if "export" in stages:
        stage_export(a, sae_dir)
    if "check" in stages:
        return 0 if stage_check(a, model, tok) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
