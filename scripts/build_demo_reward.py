"""Build the demo SARM reward model that ships with saesteer, from offline sources only.

    python scripts/build_corpus.py --out ~/.cache/saesteer/corpus    # once (the fortunes come from it)
    pip install vaderSentiment                                        # the labeller (build only)
    nice -n 19 python scripts/build_demo_reward.py                   # all stages, resumable

Model: SmolLM2-135M-Instruct cut after its 16th decoder layer, the bundled SAE
(``blocks.15.hook_resid_post``, TopK k=32, 4608 features), and a bias-free linear head over the
SAE features of the last token, trained with the Bradley-Terry loss (``mode="head"``).

Preference set (made here): replies are fortune-cookie quotes (the ``fortunes`` source of the
corpus: attribution lines removed, 6-40 words, ASCII). The labeller is VADER (Hutto & Gilbert,
2014; the ``vaderSentiment`` package, a rule-based sentiment lexicon): of two replies to the same
prompt, the one with the higher VADER ``compound`` score is chosen; pairs whose scores differ by
less than ``--min-gap`` are not used (no clear preference). Prompts are six fixed requests for a
saying. The quotes are split once, by a seeded shuffle, into a training pool and a held-out pool:
no held-out quote appears in a training pair.

Stages (``--stages``; each skipped when its output exists in ``--work``):
  pairs    build train and held-out pairs (pairs.json)
  encode   run the backbone once per distinct text; cache last-token activations (safetensors)
  train    Bradley-Terry on the cached activations; held-out accuracy vs the labeller each epoch
  export   head + sarm.json + README.md card into saesteer/embedded/assets/<NAME>/
  report   print the top features for chosen vs rejected replies, an explained reward and a
           reweighting that flips a preference (what README shows)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import sys
import time
from pathlib import Path

import torch

NAME = "smollm2-135m-it-reward-vader"
ASSETS = Path(__file__).resolve().parents[1] / "saesteer" / "embedded" / "assets" / NAME
PROMPTS = [
    "Tell me a saying.", "Share a thought with me.", "Say something memorable.",
    "Give me a quote.", "What's on your mind?", "Tell me something about life.",
]


def _args(argv: list[str] | None) -> argparse.Namespace:
    cache = Path(os.environ.get("SAESTEER_CACHE", Path.home() / ".cache" / "saesteer"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=os.environ.get("SAESTEER_CORPUS", str(cache / "corpus")))
    p.add_argument("--work", default=str(cache / f"build-{NAME}"))
    p.add_argument("--out", default=str(ASSETS))
    p.add_argument("--stages", default="pairs,encode,train,export,report")
    p.add_argument("--train-pairs", type=int, default=1000)
    p.add_argument("--heldout-pairs", type=int, default=300)
    p.add_argument("--min-gap", type=float, default=0.5, help="smallest VADER compound difference in a pair")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared CPU")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------- pairs
def clean_fortune(text: str) -> str | None:
    """A fortune as one line of prose: attribution lines ('-- Name') dropped, whitespace joined."""
    lines = [ln for ln in text.splitlines() if not re.match(r"^\s*--", ln) and not re.search(r"\t\s*--", ln)]
    s = " ".join(" ".join(lines).split())
    if not s.isascii() or not 6 <= len(s.split()) <= 40 or re.search(r"[|<>{}\[\]_=#@]", s):
        return None
    return s


def stage_pairs(a: argparse.Namespace, work: Path) -> dict:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from saesteer.data import iter_records

    seen: set[str] = set()
    quotes = []
    for split in ("train", "heldout"):
        for rec in iter_records(a.corpus, split, sources="fortunes"):
            s = clean_fortune(rec["text"])
            if s and s not in seen:
                seen.add(s)
                quotes.append(s)
    vader = SentimentIntensityAnalyzer()
    scored = [(q, vader.polarity_scores(q)["compound"]) for q in quotes]
    rng = random.Random(a.seed)
    rng.shuffle(scored)
    cut = int(len(scored) * 0.8)
    pools = {"train": scored[:cut], "heldout": scored[cut:]}
    want = {"train": a.train_pairs, "heldout": a.heldout_pairs}
    out: dict = {"labeller": "VADER compound (vaderSentiment 3.3.2): the higher-scored reply is chosen",
                 "min_gap": a.min_gap, "n_quotes": len(scored), "seed": a.seed}
    for name, pool in pools.items():
        # random pairs of quotes (each quote in at most two pairs), kept when VADER clearly prefers one
        used = [0] * len(pool)
        order = list(range(len(pool)))
        pairs: list[dict] = []
        for _ in range(4):
            rng.shuffle(order)
            free = [i for i in order if used[i] < 2]
            for i, j in zip(free[::2], free[1::2]):
                (q1, s1), (q2, s2) = pool[i], pool[j]
                if abs(s1 - s2) < a.min_gap or len(pairs) >= want[name]:
                    continue
                used[i] += 1
                used[j] += 1
                (c, sc), (r, sr) = ((q1, s1), (q2, s2)) if s1 > s2 else ((q2, s2), (q1, s1))
                pairs.append({"prompt": rng.choice(PROMPTS), "chosen": c, "rejected": r,
                              "chosen_score": sc, "rejected_score": sr})
        out[name] = pairs
        print(f"{name}: {len(pairs)} pairs from {len(pool)} quotes")
    (work / "pairs.json").write_text(json.dumps(out, indent=1))
    return out


# --------------------------------------------------------------------------------------- model
def load_rm():
    import saesteer
    from saesteer.embedded import default_sae_path
    from saesteer.embedded.smollm2 import load_smollm2

    model, tok = load_smollm2(dtype=torch.float32)
    return saesteer.SARM.from_backbone(model, default_sae_path(), layer=16, tokenizer=tok)


def triples(pairs: list[dict]) -> list[tuple[str, str, str]]:
    return [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]


def stage_encode(a: argparse.Namespace, work: Path, rm, data: dict) -> None:
    from safetensors.torch import save_file

    from saesteer.reward.fit import check_pairs, encode_pairs

    for name in ("train", "heldout"):
        f = work / f"encoded-{name}.safetensors"
        if f.exists():
            continue
        t0 = time.perf_counter()
        enc = encode_pairs(rm, check_pairs(triples(data[name]), name), batch_size=16, desc=f"backbone ({name})")
        dt = time.perf_counter() - t0
        save_file({"last": enc.last.contiguous(), "chosen": enc.chosen, "rejected": enc.rejected}, str(f),
                  metadata={"seconds": f"{dt:.1f}", "texts": str(enc.last.shape[0])})
        print(f"encoded {name}: {enc.last.shape[0]} texts in {dt:.0f} s")


def _load_encoded(work: Path, name: str):
    from safetensors import safe_open

    from saesteer.reward.fit import EncodedPairs

    with safe_open(str(work / f"encoded-{name}.safetensors"), framework="pt") as fh:
        t = {k: fh.get_tensor(k) for k in fh.keys()}
        secs = float((fh.metadata() or {}).get("seconds", 0))
    return EncodedPairs(t["last"], t["chosen"], t["rejected"]), secs


def stage_train(a: argparse.Namespace, work: Path, rm, data: dict) -> dict:
    from saesteer.reward.fit import train

    tr, s_tr = _load_encoded(work, "train")
    ho, s_ho = _load_encoded(work, "heldout")
    t0 = time.perf_counter()
    history, w, _ = train(rm.head, tr, ho, mode="head", epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                          weight_decay=a.weight_decay, seed=a.seed, progress=True)
    secs = time.perf_counter() - t0
    with torch.no_grad():
        rm.head.score.weight.copy_(w.unsqueeze(0))
    # trivial baselines on the same held-out pairs
    hp = data["heldout"]
    longer = sum((len(p["chosen"]) > len(p["rejected"])) + 0.5 * (len(p["chosen"]) == len(p["rejected"]))
                 for p in hp) / len(hp)
    result = {
        "train_pairs": len(tr), "heldout_pairs": len(ho), "epochs": a.epochs, "lr": a.lr,
        "weight_decay": a.weight_decay, "batch_size": a.batch_size,
        "heldout_accuracy": history[-1].heldout_accuracy, "train_accuracy": history[-1].train_accuracy,
        "best_heldout_accuracy": max(h.heldout_accuracy for h in history),
        "baseline_chance": 0.5, "baseline_longer_reply_wins": longer,
        "encode_seconds": {"train": s_tr, "heldout": s_ho}, "train_seconds": secs,
        "history": [vars(h) for h in history],
    }
    (work / "train.json").write_text(json.dumps(result, indent=1))
    torch.save(w.clone(), work / "head.pt")
    print(f"held-out pairwise accuracy vs VADER: {result['heldout_accuracy']:.3f} (chance 0.5, "
          f"longer-reply-wins {longer:.3f}); train {result['train_accuracy']:.3f}; {secs:.1f} s")
    return result


def _trained(work: Path, rm) -> dict:
    w = torch.load(work / "head.pt", weights_only=True)
    with torch.no_grad():
        rm.head.score.weight.copy_(w.unsqueeze(0))
    return json.loads((work / "train.json").read_text())


# --------------------------------------------------------------------------------------- report
def top_features(rm, work: Path, top: int = 10) -> dict:
    """Mean contribution w_i f_i over held-out chosen and rejected replies; the features whose
    contribution differs most between them (what moves the preference), with labels."""
    ho, _ = _load_encoded(work, "heldout")
    with torch.no_grad():
        f = rm.head.features(ho.last)
        c = rm.head.contributions(f)
    mc, mr = c[ho.chosen].mean(0), c[ho.rejected].mean(0)
    fire_c, fire_r = (f[ho.chosen] != 0).double().mean(0), (f[ho.rejected] != 0).double().mean(0)
    gap = mc - mr
    labels = rm.labels
    rows = lambda idx: [{"feature": int(i), "weight": float(rm.weight[i]), "mean_contribution_chosen": float(mc[i]),
                         "mean_contribution_rejected": float(mr[i]), "fires_chosen": float(fire_c[i]),
                         "fires_rejected": float(fire_r[i]), "label": labels[int(i)] if labels else None}
                        for i in idx]
    return {"for_chosen": rows(gap.topk(top).indices.tolist()), "for_rejected": rows((-gap).topk(top).indices.tolist())}


def find_flip(rm, data: dict, limit: int = 200) -> dict | None:
    """A held-out pair the model ranks as VADER does, and one weight set to 0 that flips it."""
    for p in data["heldout"][:limit]:
        c, r = (p["prompt"], p["chosen"]), (p["prompt"], p["rejected"])
        f = rm.features([c, r])
        w = rm.weight.detach()
        rc, rr = rm.head.rewards(f)
        if not rc > rr:
            continue
        share = (f[0] - f[1]).double() * w.double()  # each feature's part of the margin
        i = int(share.argmax())
        if share[i] > rc - rr:
            return {"pair": p, "feature": i, "reward_chosen": float(rc), "reward_rejected": float(rr),
                    "margin_share": float(share[i])}
    return None


def stage_report(a: argparse.Namespace, work: Path, rm, data: dict) -> None:
    tops = top_features(rm, work)
    (work / "top_features.json").write_text(json.dumps(tops, indent=1))
    for side in ("for_chosen", "for_rejected"):
        print(f"\nfeatures that push the reward of {side.split('_')[1]} replies up (mean w_i*f_i, chosen vs rejected):")
        for t in tops[side]:
            print(f"  {t['feature']:>5}  w={t['weight']:+.3f}  chosen {t['mean_contribution_chosen']:+.3f} "
                  f"rejected {t['mean_contribution_rejected']:+.3f}  {t['label']}")
    p = data["heldout"][0]
    print("\nheld-out pair:", json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}, indent=1))
    print(rm.explain((p["prompt"], p["chosen"]), top=8))
    print(rm.explain((p["prompt"], p["rejected"]), top=8))
    flip = find_flip(rm, data)
    if flip:
        q = flip["pair"]
        convs = [(q["prompt"], q["chosen"]), (q["prompt"], q["rejected"])]
        before = rm.score(convs)
        after = rm.reweight({flip["feature"]: 0.0}, copy=True).score(convs)
        print(f"\nflip: feature {flip['feature']} ({rm.labels[flip['feature']] if rm.labels else ''})")
        print(f"  chosen  {q['chosen']!r}: {before[0]:+.4f} -> {after[0]:+.4f}")
        print(f"  rejected {q['rejected']!r}: {before[1]:+.4f} -> {after[1]:+.4f}")
        (work / "flip.json").write_text(json.dumps({**flip, "before": before.tolist(), "after": after.tolist()},
                                                   indent=1))


# --------------------------------------------------------------------------------------- export
def stage_export(a: argparse.Namespace, work: Path, rm, data: dict, result: dict, argv: list[str]) -> None:
    out = Path(a.out)
    tops = top_features(rm, work, top=5)
    card = {
        "labeller": data["labeller"], "min_gap": data["min_gap"], "preference_source": "corpus 'fortunes' quotes",
        "prompts": PROMPTS, "heldout_accuracy": result["heldout_accuracy"],
        "train_accuracy": result["train_accuracy"], "baseline_chance": 0.5,
        "baseline_longer_reply_wins": result["baseline_longer_reply_wins"],
        "train_pairs": result["train_pairs"], "heldout_pairs": result["heldout_pairs"],
        "encode_seconds": result["encode_seconds"], "train_seconds": result["train_seconds"],
        "epochs": result["epochs"], "lr": result["lr"], "weight_decay": result["weight_decay"],
        "command": " ".join(["python scripts/build_demo_reward.py", *map(shlex.quote, _without_stages(argv))]),
    }
    rm.backbone_source = {"embedded": "smollm2", "name_or_path": "SmolLM2-135M-Instruct"}
    rm.save(out, card=card)
    lines = [
        f"# Demo SARM reward model: SmolLM2-135M-Instruct, bundled SAE, VADER-sentiment head",
        "",
        "A sparse-autoencoder reward model (SARM) built offline by `scripts/build_demo_reward.py`: "
        "SmolLM2-135M-Instruct cut after decoder layer 16 (`blocks.15.hook_resid_post`, no final norm), the "
        "bundled SAE (TopK k=32, 4608 features), and a bias-free linear head `score.weight [1, 4608]` over "
        "the SAE features of the last token, trained with the Bradley-Terry loss (head only).",
        "",
        "**Labeller**: VADER (the `vaderSentiment` package, a rule-based sentiment lexicon). Replies are "
        "fortune-cookie quotes from the corpus (`fortunes` source, 6-40 words); of two replies to one prompt the "
        f"one with the higher VADER compound score is chosen (pairs closer than {data['min_gap']} are not used). "
        "Quotes are split into a training and a held-out pool before pairing.",
        "",
        "| figure | value |", "|---|---|",
        f"| held-out pairwise accuracy vs VADER ({result['heldout_pairs']} pairs) | {result['heldout_accuracy']:.3f} |",
        f"| train pairwise accuracy ({result['train_pairs']} pairs) | {result['train_accuracy']:.3f} |",
        "| chance | 0.500 |",
        f"| 'longer reply wins' on the same held-out pairs | {result['baseline_longer_reply_wins']:.3f} |",
        f"| backbone encoding (train / held-out texts) | {result['encode_seconds']['train']:.0f} s / "
        f"{result['encode_seconds']['heldout']:.0f} s |",
        f"| head training ({result['epochs']} epochs) | {result['train_seconds']:.1f} s |",
        "",
        "Features whose mean contribution `w_i f_i` is most higher on chosen than on rejected held-out replies:",
        "", "| feature | w_i | chosen | rejected | label |", "|---|---|---|---|---|",
        *[f"| {t['feature']} | {t['weight']:+.3f} | {t['mean_contribution_chosen']:+.3f} | "
          f"{t['mean_contribution_rejected']:+.3f} | {_cell(t['label'])} |" for t in tops["for_chosen"]],
        "", "and most higher on rejected ones:", "",
        "| feature | w_i | chosen | rejected | label |", "|---|---|---|---|---|",
        *[f"| {t['feature']} | {t['weight']:+.3f} | {t['mean_contribution_chosen']:+.3f} | "
          f"{t['mean_contribution_rejected']:+.3f} | {_cell(t['label'])} |" for t in tops["for_rejected"]],
        "", "**Known weakness.** The head reads one token, as SARM does: the end-of-turn token `<|im_end|>`. "
        "The bundled SAE was trained on plain corpus text, never on chat-formatted text, so at that token a "
        "small, nearly fixed set of features fires (251 distinct features over 2000 training replies; the ten "
        "most common fire on every reply), and their labels, computed from corpus text, do not describe what "
        "they carry here. The preference signal is in small differences of those activations, so the "
        "explanations are exact but not yet illuminating. On a validation split of the training pairs the "
        "dense variant (`use_topk=False`, all 4608 pre-activations) reached about 0.76: sparsity at one "
        "token costs accuracy here. An SAE trained on chat-formatted text, or a head over features pooled "
        "over the reply, are the fixes.",
        "", "Load it: `saesteer.reward.load_demo()` (or `saesteer.SARM.from_pretrained(this_folder)`).", "",
        "Rebuild:", "", "```", card["command"], "```", "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    sample = {"note": "the first 40 held-out pairs (never trained on), with the labeller's scores; "
                      "tests/test_real_reward.py checks the model agrees with VADER on them above chance",
              "labeller": data["labeller"], "pairs": data["heldout"][:40]}
    (out / "heldout_sample.json").write_text(json.dumps(sample, indent=1), encoding="utf-8")
    print(f"exported to {out}")


def _without_stages(argv: list[str]) -> list[str]:
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
        elif x == "--stages":
            skip = True
        elif not x.startswith("--stages="):
            out.append(x)
    return out


def _cell(s: object) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    work = Path(a.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    stages = a.stages.split(",")
    data = json.loads((work / "pairs.json").read_text()) if (work / "pairs.json").exists() else None
    if "pairs" in stages and data is None:
        data = stage_pairs(a, work)
    if data is None:
        raise SystemExit("no pairs.json: run the 'pairs' stage first")
    if not set(stages) & {"encode", "train", "export", "report"}:
        return
    rm = load_rm()
    if "encode" in stages:
        stage_encode(a, work, rm, data)
    if not set(stages) & {"train", "export", "report"}:
        return
    result = stage_train(a, work, rm, data) if "train" in stages else _trained(work, rm)
    if "export" in stages:
        stage_export(a, work, rm, data, result, argv)
    if "report" in stages:
        stage_report(a, work, rm, data)


if __name__ == "__main__":
    main()
