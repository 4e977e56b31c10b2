"""Evidence that steering works on the real model: clamp concept features of the bundled SAE on
SmolLM2-135M-Instruct and measure what the generated text becomes.

    python examples/concept_steering.py            # calibrated strengths, ~25 min on 2 idle CPU cores (bf16)
    python examples/concept_steering.py --fixed    # the older rule: clamps at 1x / 2x the largest activation

Calibrated (the default): each candidate gets a steering sweep (saesteer.eval.steering_sweep) of
clamp-at-generated-positions and add-along-the-decoder-row, scored by the concept lexicon as its
external score: a screen at 0.5x its largest labelling activation keeps the 3 most promising, a sweep
over 0.3-0.8x on 8 *selection* prompts follows; of the points whose median perplexity stays within
SELECT_BUDGET x the unsteered one and whose text is not degenerate, the one raising both scores most is
kept, then measured on 20 other neutral prompts.

For each concept (Shakespeare, Python code, the King James Bible, the Linux kernel docs) the candidate features are found by
their labels: two label-search hits for each of four queries ("shakespeare thou", ...) and the four
densest features whose top contexts come >= 80% from the concept's corpus source. Each candidate is
tried at two clamp values (1x and 2x its largest activation seen when labelling) on 4 *selection*
prompts; the one that raises both scores below most (and stays fluent) is kept, then measured on 20
other neutral prompts. Reported per concept, unsteered vs steered:
  - feature act: the feature's mean activation on the generated tokens, read by the unsteered model;
  - distinctive words /100: how many of every 100 generated words are among the concept source's 200
    most distinctive corpus words (concept_lexicon.json; independent of the SAE and of the outputs);
  - perplexity of the generated tokens under the unsteered model.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import re
import statistics
from pathlib import Path

import torch

import saesteer
from saesteer.embedded import load_default

#: concept -> (corpus source, label-search queries). Keywords are not hand-picked: each concept's score
#: words are its source's most distinctive words in the corpus (concept_lexicon.json, --build-lexicon).
CONCEPTS = {
    "shakespeare": ("shakespeare", ("shakespeare thou", "shakespeare thy", "shakespeare hath", "shakespeare lord")),
    "python": ("python-docs", ("python def", "python import", "python return", "python self")),
    "bible": ("kjv", ("kjv unto", "kjv lord", "kjv shall", "kjv thee")),
    "linux": ("linux-docs", ("linux kernel", "linux driver", "linux device", "linux config")),
}
LEXICON = Path(__file__).with_name("concept_lexicon.json")
MULTS = (1.0, 2.0)  # --fixed: clamp values, in units of the feature's largest labelling activation
SELECT = ["Tell me something interesting.", "What should I cook tonight?", "Describe your morning.",
          "Give me some advice."]
#: calibrated mode. Stage 1 screens every candidate with one strength per kind on the SELECT prompts; stage 2
#: sweeps the SCREEN_KEEP best over SWEEP_STRENGTHS (units of the largest labelling activation) on SWEEP_PROMPTS
SWEEP_PROMPTS = SELECT + ["Write a short note to a friend.", "What happened at work today?",
                          "Say something about the weekend.", "What is your opinion on breakfast?"]
SWEEP_KINDS = ("clamp_generated", "add")
SCREEN_STRENGTH, SCREEN_KEEP = 0.5, 3
SWEEP_STRENGTHS = (0.3, 0.4, 0.5, 0.6, 0.8)
#: selection keeps points within this perplexity ratio on the selection prompts: below the 1.5x target,
#: since a ratio measured on 8 prompts is noisy and the target is judged on 20 others
SELECT_BUDGET = 1.4
PROMPTS = ["What is the weather like in spring?", "Tell me about your favourite animal.", "How do I make tea?",
           "Describe a busy city street.", "What is a good hobby?", "Write a sentence about the ocean.",
           "What do you think about music?", "How do trees grow?", "Tell me about a famous building.",
           "What is the best way to learn?", "Describe a quiet evening.", "What makes a good friend?",
           "Tell me a fact about the moon.", "How does a bicycle work?", "What is your favourite colour and why?",
           "Describe a walk in the park.", "What should I do on a rainy day?", "Tell me about the mountains.",
           "How do people celebrate birthdays?", "What is the meaning of a smile?"]


def chat(tok, prompts):
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    return tok(texts, return_tensors="pt", padding=True)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("'tis", "tis"))


@torch.no_grad()
def measure(sm, tok, enc, out, feature: int, keywords: set[str]) -> dict[str, list[float]]:
    """Per row: the feature's mean activation on generated tokens, keyword rate, perplexity, all
    read by the unsteered model."""
    n = enc["input_ids"].shape[1]
    gen = out[:, n:]
    gen_mask = torch.ones_like(gen)
    eos = tok.eos_token_id
    for r in range(gen.shape[0]):  # stop counting after the first end-of-turn
        hit = (gen[r] == eos).nonzero()
        if len(hit):
            gen_mask[r, int(hit[0]) + 1:] = 0
    mask = torch.cat([enc["attention_mask"], gen_mask], 1)
    fa = sm.features(input_ids=out, attention_mask=mask, top_k=64)
    logits = sm.model(input_ids=out, attention_mask=mask).logits.float()
    res = {"feat": [], "kw": [], "ppl": []}
    for r in range(out.shape[0]):
        m = gen_mask[r].bool()
        vals = torch.where(fa.indices[r, n:] == feature, fa.values[r, n:], torch.zeros(()))
        res["feat"].append(float(vals.sum(-1)[m].mean()) if m.any() else 0.0)
        w = words(tok.decode(gen[r][m], skip_special_tokens=True))
        res["kw"].append(100 * sum(x in keywords for x in w) / max(len(w), 1))
        lp = torch.log_softmax(logits[r, n - 1:-1], -1).gather(-1, gen[r, :, None]).squeeze(-1)
        res["ppl"].append(float(torch.exp(-lp[m].mean())) if m.any() else float("nan"))
    return res


def build_lexicon(corpus: str | None, top: int = 200) -> None:
    """Each concept source's ``top`` most distinctive words in the corpus's train split: seen >= 100
    times there and >= 8x more often (per word) than in the other sources, ranked by log-odds x
    log-count. Written to concept_lexicon.json; ~1 min."""
    from saesteer.data.corpus import iter_records

    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for rec in iter_records(corpus, "train"):
        counts[rec["source"]].update(words(rec["text"]))
    total = {k: sum(v.values()) for k, v in counts.items()}
    every = sum(counts.values(), collections.Counter())
    out = {}
    for source, _ in CONCEPTS.values():
        n, rest_n = total[source], sum(total.values()) - total[source]
        ranked = []
        for w, c in counts[source].items():
            lo = math.log((c + 1) / n) - math.log((every[w] - c + 1) / rest_n)
            if c >= 100 and len(w) > 1 and lo >= math.log(8):
                ranked.append((lo * math.log(c), w))
        out[source] = [w for _, w in sorted(ranked, reverse=True)[:top]]
    LEXICON.write_text(json.dumps({"built_by": "python examples/concept_steering.py --build-lexicon CORPUS",
                                   "rule": build_lexicon.__doc__.split("\n\n")[0].strip(), **out}, indent=1))
    print(f"wrote {LEXICON}: " + ", ".join(f"{k} {len(v)} words" for k, v in out.items()))


def candidates(labels, source: str, queries: tuple[str, ...]) -> list[int]:
    """Label-search hits (2 per query) plus the 4 densest features whose top contexts come >= 80% from
    the concept's source."""
    style = sorted((f for f in labels if labels.info(f)["sources"].get(source, 0) >= 0.8),
                   key=lambda f: -labels.info(f)["density"])[:4]
    return list(dict.fromkeys([m.feature for q in queries for m in labels.search(q, top=2)] + style))


def select(sm, tok, labels, cands: list[int], keywords: set[str], gen: dict) -> tuple[int, float]:
    """The (feature, clamp value) whose steered text on the SELECT prompts raises both scores most:
    maximise min(keyword gain / 2 words per 100, feature-activation gain / 1.0), fluent text only."""
    trials = [(f, mult * labels.info(f)["max_activation"]) for f in cands for mult in MULTS]
    k = len(SELECT)
    enc = chat(tok, SELECT * len(trials))
    out = sm.generate(**enc, edits=[[saesteer.Clamp(f, v)] for f, v in trials for _ in SELECT], **gen)
    base_enc = chat(tok, SELECT)
    base_out = sm.generate(**base_enc, **gen)
    n = enc["input_ids"].shape[1]
    best, best_score = trials[0], -math.inf
    for t, (f, v) in enumerate(trials):
        texts = [tok.decode(out[t * k + i, n:], skip_special_tokens=True) for i in range(k)]
        # degenerate text ("unto unto unto ...") does not count: at least 35% of its words distinct
        if not all(len(set(words(x))) >= 0.35 * max(len(words(x)), 1) for x in texts):
            continue
        sub = {key: val[t * k:(t + 1) * k] for key, val in enc.items()}
        s = measure(sm, tok, sub, out[t * k:(t + 1) * k], f, keywords)
        b = measure(sm, tok, base_enc, base_out, f, keywords)
        m = statistics.mean
        score = min((m(s["kw"]) - m(b["kw"])) / 2.0, m(s["feat"]) - m(b["feat"]))
        if score > best_score:
            best, best_score = (f, v), score
    return best


def lexicon_rate(keywords: set[str]):
    def score(text: str) -> float:
        w = words(text)
        return 100 * sum(x in keywords for x in w) / max(len(w), 1)
    return score


def degenerate(text: str) -> bool:
    """Repetitive text ("unto unto unto ...", "the sons of the sons of ..."): fewer than 35% of its
    words distinct. Such text can have a *low* perplexity, so the perplexity budget alone misses it."""
    w = words(text)
    return len(set(w)) < 0.35 * max(len(w), 1)


def _gains(r, texts: list[str], k: int):
    """Per point of sweep ``r``: (point, keyword gain, feature-activation gain, perplexity ratio, degenerate?)
    against its baseline; ``texts`` are the sweep's outputs in order (baseline first, ``k`` per point)."""
    assert len(texts) == k * (1 + len(r.points)), "score is called once per output, baseline first"
    b = r.baseline
    return [(p, p.concept_external - b.concept_external, p.concept - b.concept, r.ratio(p),
             any(map(degenerate, texts[k * (j + 1):k * (j + 2)]))) for j, p in enumerate(r.points)]


def _sweep(sm, f: int, keywords: set[str], prompts, strengths, tokens: int):
    from saesteer.eval import steering_sweep

    rate, texts = lexicon_rate(keywords), []

    def score(text: str) -> float:
        texts.append(text)
        return rate(text)

    r = steering_sweep(sm, f, prompts=prompts, kinds=SWEEP_KINDS, strengths=strengths, max_new_tokens=tokens,
                       budget=SELECT_BUDGET, score=score, progress=False)
    return r, _gains(r, texts, len(prompts))


def select_calibrated(sm, cands: list[int], keywords: set[str], log=print):
    """Two stages of :func:`saesteer.eval.steering_sweep`. Screen: every candidate, each SWEEP_KIND at
    SCREEN_STRENGTH on the SELECT prompts (24 tokens), ranked by min(keyword gain / 2 words per 100,
    feature-activation gain / 1.0), perplexity ignored; the SCREEN_KEEP best go on. Sweep: those over
    SWEEP_STRENGTHS on SWEEP_PROMPTS (32 tokens). Returns the (feature, EditSet, point, selection
    perplexity ratio) that maximises the same min() among points that raise both scores, stay within
    SELECT_BUDGET x the unsteered perplexity and give no degenerate text; else the largest
    feature-activation gain within the budget; None when nothing fits."""
    screened = []
    for f in cands:
        _, g = _sweep(sm, f, keywords, SELECT, (SCREEN_STRENGTH,), 24)
        screened.append((max(min(dk / 2.0, dc) for _, dk, dc, _, _ in g), f))
    keep = [f for _, f in sorted(screened, reverse=True)[:SCREEN_KEEP]]
    log("  screen: " + ", ".join(f"{f} {s:+.2f}" for s, f in sorted(screened, reverse=True)) + f"; keep {keep}")
    best, best_key = None, None
    for f in keep:
        r, g = _sweep(sm, f, keywords, SWEEP_PROMPTS, SWEEP_STRENGTHS, 32)
        for p, dk, dc, ratio, degen in g:
            if ratio > SELECT_BUDGET or degen or not math.isfinite(p.concept):
                continue
            key = (dk > 0 and dc > 0, min(dk / 2.0, dc) if dk > 0 else dc)
            if best_key is None or key > best_key:
                best, best_key = (f, r.edits_for(p), p, ratio), key
        log("  " + f"{f}: " + "; ".join(f"{p.kind} {p.strength:g}x kw {dk:+.1f} act {dc:+.2f} ppl {ratio:.2f}x"
                                        f"{' degenerate' if degen else ''}" for p, dk, dc, ratio, degen in g))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--fixed", action="store_true", help="the older rule: clamps at 1x / 2x the largest activation")
    p.add_argument("--build-lexicon", metavar="CORPUS", nargs="?", const="",
                   help="rebuild concept_lexicon.json from the corpus (scripts/build_corpus.py) and exit")
    p.add_argument("--concepts", default=",".join(CONCEPTS), help="comma-separated subset of " + ", ".join(CONCEPTS))
    a = p.parse_args()
    if a.build_lexicon is not None:
        return build_lexicon(a.build_lexicon or None)
    lexicon = json.loads(LEXICON.read_text())
    sm, tok = load_default(dtype=torch.float32 if a.fp32 else torch.bfloat16)
    labels = sm.sae.labels
    gen = dict(max_new_tokens=a.new_tokens, do_sample=False)
    sel_gen = dict(max_new_tokens=32, do_sample=False)
    base_enc = chat(tok, PROMPTS)
    base_out = sm.generate(**base_enc, **gen)
    rows = []
    for concept in a.concepts.split(","):
        source, queries = CONCEPTS[concept]
        keywords = set(lexicon[source])
        cands = candidates(labels, source, queries)
        if a.fixed:
            feature, value = select(sm, tok, labels, cands, keywords, sel_gen)
            edit, setting = {feature: value}, f"clamp {value:.1f}"
        else:
            print(f"{concept}: sweeping {len(cands)} candidates", flush=True)
            pick = select_calibrated(sm, cands, keywords)
            if pick is None:
                print(f"{concept}: no candidate setting within {SELECT_BUDGET}x perplexity")
                continue
            feature, edit, point, sel_ratio = pick
            value = point.value
            setting = f"{point.kind} {point.strength:g}x ({value:.1f})"
        steered = sm.generate(**base_enc, edits=edit, **gen)
        b = measure(sm, tok, base_enc, base_out, feature, keywords)
        s = measure(sm, tok, base_enc, steered, feature, keywords)
        rows.append((concept, feature, setting, labels[feature], b, s,
                     tok.decode(steered[0, base_enc["input_ids"].shape[1]:], skip_special_tokens=True)))
    print(f"SmolLM2-135M-Instruct + bundled SAE, {len(PROMPTS)} neutral prompts, {a.new_tokens} new tokens, "
          f"{'fp32' if a.fp32 else 'bf16'}; mean over prompts (unsteered -> steered)\n")
    print("| concept | feature | setting | feature act on output | distinctive words /100 | perplexity (ratio) |")
    print("|---|---|---|---|---|---|")
    for concept, f, v, label, b, s, _ in rows:
        m = statistics.mean
        pb, ps = statistics.median(b["ppl"]), statistics.median(s["ppl"])
        print(f"| {concept} | {f} | {v} | {m(b['feat']):.2f} -> {m(s['feat']):.2f} | "
              f"{m(b['kw']):.1f} -> {m(s['kw']):.1f} | {pb:.2f} -> {ps:.2f} ({ps / pb:.2f}x) |")
    print()
    for concept, f, _, label, b, s, sample in rows:
        print(f"{concept}: feature {f} = {label}\n  '{PROMPTS[0]}' -> {sample.strip()[:160]!r}")
    print(f"\nunsteered: {tok.decode(base_out[0, base_enc['input_ids'].shape[1]:], skip_special_tokens=True)[:160]!r}")


if __name__ == "__main__":
    main()
