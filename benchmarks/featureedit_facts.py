"""FeatureEdit on the real model: erase what SmolLM2-135M-Instruct knows about one country with the
bundled SAE's features, and compare with erasing as many raw neurons at the same hook.

    nice -n 19 python benchmarks/featureedit_facts.py                       # France, 8/32/128 units
    python benchmarks/featureedit_facts.py --group Japan --units 8 32 --corpus ~/.cache/saesteer/corpus

Facts (``featureedit_facts.json`` beside this script): capital, currency, official language and
continent of 30 countries, three templates each, plus 20 general-knowledge facts. A fact is kept
only when the unsteered model answers it greedily (every answer token is the argmax; answers
matched case-insensitively). Then, for the group (default France):

- target (reliability): the group's facts in template 0; paraphrases (generality): templates 1-2;
- contrast (locality, seen by the selection): the template-0 facts of the first half of the other
  countries; unrelated (locality, never seen): the template-0 facts of the other half plus the
  general facts;
- held-out text (delta perplexity): the first records of the corpus' held-out split (or, without a
  corpus, Python's own docstrings), 128 tokens each.

For each erasure site (every position, or only the group's subject tokens), each selection method
(attribution, activation contrast) and each unit kind (bundled SAE features; the layer's raw
neurons via the exact neuron basis) the top-N units are chosen once and the best 8/32/128 erased.
Prints the markdown table the README quotes, and the time taken.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import torch

import saesteer
from saesteer.featureedit import Fact, FeatureEdit, Probes
from saesteer.featureedit.facts import answer_logprobs, chunks, fact_batch
from saesteer.featureedit.select import model_device

DATA = Path(__file__).with_name("featureedit_facts.json")


def _variants(answers: list[str]) -> list[str]:
    out: list[str] = []
    for a in answers:
        for v in (a, a.lower(), a[:1].upper() + a[1:]):
            if v not in out:
                out.append(v)
    return out


@torch.no_grad()
def known_facts(sm, tok, data: dict, batch_size: int = 32) -> dict[tuple[str, str, int], Fact]:
    """``{(subject, relation, template): Fact}`` for the facts the unsteered model answers greedily
    (the best-scoring correct answer variant). Subject ``""`` holds the general facts."""
    cands: list[tuple[tuple[str, str, int], Fact]] = []
    for s, rels in data["subjects"].items():
        for r, answers in rels.items():
            for t, tpl in enumerate(data["relations"][r]):
                cands += [((s, r, t), Fact(tpl.format(s=s), " " + v, s)) for v in _variants(answers)]
    for i, (prompt, answers) in enumerate(data["general"]):
        cands += [(("", f"general{i}", 0), Fact(prompt, " " + v)) for v in _variants(answers)]
    best: dict[tuple[str, str, int], tuple[float, Fact]] = {}
    dev = model_device(sm.model)
    for sl in chunks(len(cands), batch_size):
        part = cands[sl]
        b = fact_batch(tok, [f for _, f in part], device=dev)
        lp, ok = answer_logprobs(sm.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b)
        for (key, fact), v, good in zip(part, lp.tolist(), ok.tolist()):
            if good and (key not in best or v > best[key][0]):
                best[key] = (v, fact)
    return {k: f for k, (_, f) in best.items()}


def fact_sets(known: dict, data: dict, group: str) -> dict[str, list[Fact]]:
    others = [s for s in data["subjects"] if s != group]
    seen, unseen = others[: len(others) // 2], others[len(others) // 2:]
    pick = lambda subs, templates: [f for (s, _, t), f in known.items() if s in subs and t in templates]  # noqa: E731
    return {"target": pick([group], (0,)), "paraphrases": pick([group], (1, 2)),
            "contrast": pick(seen, (0,)), "unrelated": pick(unseen, (0,)) + pick([""], (0,))}


def heldout_texts(corpus: str | None, n: int) -> tuple[list[str], str]:
    from saesteer.data.corpus import CorpusNotFoundError, iter_corpus

    try:
        texts = [t for t, _ in zip(iter_corpus(corpus, split="heldout"), range(n))]
        return texts, f"corpus held-out split ({corpus or 'default corpus folder'})"
    except CorpusNotFoundError:
        import collections
        import json as js
        import pathlib

        docs = [inspect.getdoc(o) or "" for m in (collections, js, pathlib) for _, o in inspect.getmembers(m)
                if callable(o)]
        return [d for d in docs if len(d) > 200][:n], "Python standard-library docstrings (no corpus found)"


def run(args) -> int:
    t0 = time.perf_counter()
    from saesteer.embedded import load_default

    sm, tok = load_default()
    tok.padding_side = "right"
    data = json.loads(DATA.read_text())
    if args.group not in data["subjects"]:
        print(f"unknown group {args.group!r}; choose one of {', '.join(data['subjects'])}", file=sys.stderr)
        return 2
    known = known_facts(sm, tok, data)
    n_cands = sum(len(rels) * 3 for rels in data["subjects"].values()) + len(data["general"])
    sets = fact_sets(known, data, args.group)
    texts, source = heldout_texts(args.corpus, args.heldout)
    probes = Probes(target=sets["target"], paraphrases=sets["paraphrases"], contrast=sets["contrast"],
                    unrelated=sets["unrelated"], heldout=texts)
    print(f"model answers {len(known)} of {n_cands} facts; group {args.group}: {len(sets['target'])} target, "
          f"{len(sets['paraphrases'])} paraphrases; {len(sets['contrast'])} contrast, {len(sets['unrelated'])} "
          f"unrelated; held-out: {len(texts)} texts from {source}  [{time.perf_counter() - t0:.1f} s]")
    for f in sets["target"]:
        print(f"  target: {f.prompt!r} -> {f.answer!r}")
    if not sets["target"] or not sets["contrast"]:
        print("the model knows too few facts of this group to run", file=sys.stderr)
        return 1
    top = max(args.units)
    rows = []
    baseline = None  # the unedited numbers, measured once
    for positions in args.positions:
        for method in args.methods:
            for units in ("features", "neurons"):
                t1 = time.perf_counter()
                edit = FeatureEdit.find(sm, sets["target"], sets["contrast"], top=top, method=method,
                                        units=units, positions=positions)
                t_find = time.perf_counter() - t1
                if units == "features" and positions == args.positions[0] and method == args.methods[0]:
                    print(f"\nbest {min(8, top)} features ({method}, positions={positions}):")
                    print(saesteer.featureedit.Selection(edit.features[:8]))
                    if args.save:
                        print(f"recipe of the {min(args.units)}-feature edit: {edit.top(min(args.units)).save(args.save)}")
                for n in args.units:
                    r = edit.top(n).evaluate(probes, verbose=False, max_heldout_tokens=args.heldout_tokens,
                                             baseline=baseline)
                    baseline = baseline or r
                    rows.append((positions, method, n, units, r))
                    g = r.groups
                    print(f"{positions:>7} {method:>11} {n:>4} {units:>8}: rel {r.reliability:6.3f} gen "
                          f"{r.generality:6.3f} loc {r.locality_contrast:6.3f}/{r.locality_unrelated:6.3f} "
                          f"acc {g['target'].acc1:.2f} dppl {r.delta_ppl:+.3f}  [find {t_find:.1f} s]", flush=True)
    base = rows[0][4]
    print(f"\nunedited: target P(answer) {base.groups['target'].mean_p0:.3f}, perplexity {base.ppl0:.3f} "
          f"on {base.heldout_tokens} held-out tokens")
    print("\n| erased at | selection | units | features: reliability | generality | locality contrast / unseen "
          "| ΔPPL | neurons: reliability | generality | locality contrast / unseen | ΔPPL |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    by = {(p, m, n, u): r for p, m, n, u, r in rows}
    for positions in args.positions:
        for method in args.methods:
            for n in args.units:
                cells = []
                for units in ("features", "neurons"):
                    r = by[(positions, method, n, units)]
                    cells += [f"{r.reliability:.3f}", f"{r.generality:.3f}",
                              f"{r.locality_contrast:.3f} / {r.locality_unrelated:.3f}", f"{r.delta_ppl:+.3f}"]
                where = "every token but the first" if positions == "all" else "subject tokens"
                print(f"| {where} | {method} | {n} | " + " | ".join(cells) + " |")
    print(f"\ntotal time: {time.perf_counter() - t0:.1f} s (torch threads: {torch.get_num_threads()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--group", default="France", help="the subject whose facts are erased")
    p.add_argument("--units", type=int, nargs="+", default=[8, 32, 128], help="numbers of units erased")
    p.add_argument("--methods", nargs="+", default=["activation", "attribution"], choices=["activation", "attribution"])
    p.add_argument("--positions", nargs="+", default=["all", "subject"], choices=["all", "subject"])
    p.add_argument("--corpus", default=None, help="corpus folder for held-out text (default: $SAESTEER_CORPUS or "
                                                  "~/.cache/saesteer/corpus; Python docstrings when none)")
    p.add_argument("--heldout", type=int, default=16, help="number of held-out texts")
    p.add_argument("--heldout-tokens", type=int, default=128, help="tokens per held-out text")
    p.add_argument("--save", default=None, help="write the recipe of the first edit here (JSON)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
