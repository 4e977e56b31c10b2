"""Evidence that steering works on the real model: clamp concept features of the bundled SAE on
SmolLM2-135M-Instruct and measure what the generated text becomes.

    python examples/concept_steering.py            # ~3 min on 2 CPU cores (bf16)

For each concept (Shakespeare, Python code, the King James Bible) candidate features are found by
their labels: the top label-search hits for the source plus a typical word ("kjv unto"), and the
four densest features whose top contexts come >= 80% from that source (style features); among
these 8 candidates and two clamp values (1x and 2x the feature's largest activation seen when
labelling), the one whose steered text has the highest keyword rate on 4 *selection* prompts (and
stays fluent: at least 35% of its words distinct), plus 10x the feature's own mean activation on
that output as read by the unsteered model, is kept, then measured on 20 other neutral prompts. Reported per concept, unsteered vs steered:
  - feat: the feature's mean activation on the generated tokens, read by the unsteered model;
  - kw/100w: concept keywords per 100 generated words (independent of the SAE);
  - ppl: perplexity of the generated tokens under the unsteered model.
"""

from __future__ import annotations

import argparse
import re
import statistics

import torch

import saesteer
from saesteer.embedded import load_default

CONCEPTS = {  # queries for the label search, and keywords that are rare in ordinary modern English
    "shakespeare": (("shakespeare thou", "shakespeare thy", "shakespeare"),
                    {"thou", "thee", "thy", "thine", "hath", "doth", "shalt", "ere", "tis", "wherefore", "hast",
                     "o", "prithee", "nay", "ay", "sirrah", "methinks", "lord", "sir", "enter", "exit", "exeunt",
                     "art", "dost", "wilt", "thus"}),
    "python": (("python def", "python import", "python return", "python"),
               {"def", "import", "return", "returns", "print", "self", "class", "none", "lambda", "int", "str",
                "dict", "len", "range", "true", "false", "python", "function", "functions", "module", "object",
                "argument", "arguments", "parameter", "method", "tuple", "list", "value", "values", "code"}),
    "bible": (("kjv unto", "kjv lord", "kjv"),
              {"lord", "god", "unto", "shall", "thee", "thou", "hath", "israel", "jesus", "behold", "thy", "ye",
               "saith", "heaven", "spirit", "children", "sons", "lamb", "holy", "amen", "prophet", "jerusalem"}),
}
MULTS = (1.0, 2.0)  # clamp values, in units of the feature's largest labelling activation
SELECT = ["Tell me something interesting.", "What should I cook tonight?", "Describe your morning.",
          "Give me some advice."]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--fp32", action="store_true")
    a = p.parse_args()
    sm, tok = load_default(dtype=torch.float32 if a.fp32 else torch.bfloat16)
    labels = sm.sae.labels
    gen = dict(max_new_tokens=a.new_tokens, do_sample=False)
    base_enc = chat(tok, PROMPTS)
    base_out = sm.generate(**base_enc, **gen)
    rows = []
    for concept, (queries, keywords) in CONCEPTS.items():
        source = queries[-1] if queries[-1] != "python" else "python-docs"
        # style features: most of their top contexts from the concept's source, firing often
        style = sorted((f for f in labels if labels.info(f)["sources"].get(source, 0) >= 0.8),
                       key=lambda f: -labels.info(f)["density"])[:4]
        cands = list(dict.fromkeys([m.feature for q in queries[:2] for m in labels.search(q, top=2)] + style))[:8]
        trials = [(f, mult * labels.info(f)["max_activation"]) for f in cands for mult in MULTS]
        sel = chat(tok, SELECT * len(trials))
        per_row = [saesteer.Clamp(f, v) for f, v in trials for _ in SELECT]
        out = sm.generate(**sel, edits=[[e] for e in per_row], **gen)
        n = sel["input_ids"].shape[1]
        rates = []
        for t in range(len(trials)):
            texts = [tok.decode(out[t * len(SELECT) + i, n:], skip_special_tokens=True) for i in range(len(SELECT))]
            # degenerate text ("unto unto unto ...") does not count: at least 35% of its words distinct
            fluent = all(len(set(words(x))) >= 0.35 * max(len(words(x)), 1) for x in texts)
            rates.append(statistics.mean(100 * sum(w in keywords for w in words(x)) / max(len(words(x)), 1)
                                         for x in texts) if fluent else -1.0)
        for t, (f, _) in enumerate(trials):  # add the feature's own activation on the output (unsteered read)
            if rates[t] < 0:
                continue
            span = slice(t * len(SELECT), (t + 1) * len(SELECT))
            sub = {k: v[span] for k, v in sel.items()}
            rates[t] += 10 * statistics.mean(measure(sm, tok, sub, out[span], f, keywords)["feat"])
        feature, value = trials[max(range(len(trials)), key=rates.__getitem__)]
        steered = sm.generate(**base_enc, edits={feature: value}, **gen)
        b = measure(sm, tok, base_enc, base_out, feature, keywords)
        s = measure(sm, tok, base_enc, steered, feature, keywords)
        rows.append((concept, feature, value, labels[feature], b, s,
                     tok.decode(steered[0, base_enc["input_ids"].shape[1]:], skip_special_tokens=True)))
    print(f"SmolLM2-135M-Instruct + bundled SAE, {len(PROMPTS)} neutral prompts, {a.new_tokens} new tokens, "
          f"{'fp32' if a.fp32 else 'bf16'}; mean over prompts (unsteered -> steered)\n")
    print(f"| concept | feature | clamp | feat act on output | keywords /100 words | perplexity |")
    print(f"|---|---|---|---|---|---|")
    for concept, f, v, label, b, s, _ in rows:
        m = statistics.mean
        print(f"| {concept} | {f} | {v:.1f} | {m(b['feat']):.2f} -> {m(s['feat']):.2f} | "
              f"{m(b['kw']):.1f} -> {m(s['kw']):.1f} | {statistics.median(b['ppl']):.1f} -> "
              f"{statistics.median(s['ppl']):.1f} |")
    print()
    for concept, f, v, label, b, s, sample in rows:
        print(f"{concept}: feature {f} = {label}\n  '{PROMPTS[0]}' -> {sample.strip()[:160]!r}")
    print(f"\nunsteered: {tok.decode(base_out[0, base_enc['input_ids'].shape[1]:], skip_special_tokens=True)[:160]!r}")


if __name__ == "__main__":
    main()
