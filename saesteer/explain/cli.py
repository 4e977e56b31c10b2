"""``saesteer explain``: explain features in words and score every explanation (delphi detection and
fuzzing), storing them beside the SAE.

    saesteer explain                                   # 8 features of the bundled SAE, SmolLM2 as explainer, offline
    saesteer explain --features 2296,1309 --methods oneshot,sage
    saesteer explain --sae S --model M --n-features 50 --llm openai:http://127.0.0.1:8000/v1 --llm-model NAME
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Sequence

from saesteer.errors import SaesteerError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saesteer explain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sae", default=None, help="SAE folder (default: the bundled SAE)")
    p.add_argument("--model", default="smollm2", help="the model the SAE reads: smollm2 (embedded), a folder or hub id")
    p.add_argument("--hook", default=None)
    p.add_argument("--features", default=None, help="comma-separated feature indices")
    p.add_argument("--n-features", type=int, default=8,
                   help="without --features: this many features drawn at random (seed --seed) among those that fire")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="label,oneshot,sage,random",
                   help="comma-separated: label (the automatic label), oneshot, sage (the loop), random (baseline)")
    p.add_argument("--llm", default="smollm2", help="smollm2 (offline default), hf:PATH_OR_ID or openai:BASE_URL")
    p.add_argument("--llm-model", default=None, help="with openai:: the served model's name")
    p.add_argument("--texts", default="corpus",
                   help="'corpus' (the built-in corpus's held-out split) or a text file (one document per line)")
    p.add_argument("--max-windows", type=int, default=2000, help="32-token windows read from the texts")
    p.add_argument("--min-examples", type=int, default=20, help="skip features with fewer activating windows")
    p.add_argument("--test-examples", type=int, default=50,
                   help="activating and non-activating test examples per feature (delphi: 50 each)")
    p.add_argument("--sage-calls", type=int, default=80, help="LLM-call budget of the loop, per feature")
    p.add_argument("--out", default=None, help="folder for feature_explanations.json (default: the SAE's folder)")
    p.add_argument("--quiet", action="store_true")
    return p


def _texts(spec: str) -> list[str]:
    if spec == "corpus":
        from saesteer.data.corpus import iter_records

        return [r["text"] for r in iter_records(None, "heldout")]
    p = Path(spec)
    if not p.is_file():
        raise SaesteerError(f"--texts {spec}: no such file (one document per line), or use 'corpus'")
    return [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _features(a: argparse.Namespace, sae: Any) -> list[int]:
    if a.features:
        try:
            return [sae.check_feature(int(x)) for x in a.features.split(",") if x.strip()]
        except ValueError:
            raise SaesteerError(f"--features {a.features!r}: expected comma-separated integers") from None
    pool = list(range(sae.d_sae))
    labels = sae.labels
    if labels is not None and len(labels):
        pool = [f for f in pool if f in labels and float(labels.info(f).get("density", 1.0) or 0) > 0]
    return sorted(random.Random(a.seed).sample(pool, min(a.n_features * 2, len(pool))))


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Explain and score what the arguments ask; writes the file and returns ``{"path", "results", "summary"}``."""
    import saesteer
    from saesteer.cli import load_model
    from saesteer.explain import store
    from saesteer.explain.llm import load_llm
    from saesteer.explain.run import METHODS, explain_features, summary

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SaesteerError(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    sae_path = a.sae
    if sae_path is None:
        from saesteer.embedded import default_sae_path

        sae_path = str(default_sae_path())
    out_dir = Path(a.out) if a.out else (Path(sae_path) if Path(sae_path).is_dir() else None)
    if out_dir is None:
        raise SaesteerError(f"--sae {sae_path} is not a local folder: pass --out DIR for the explanations")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise SaesteerError(f"{out_dir} is not writable: pass --out DIR for the explanations")
    texts = _texts(a.texts)  # fails before any model loads when the corpus or file is missing
    sae = saesteer.load_sae(sae_path)
    feats = _features(a, sae)
    model, tok = load_model(a.model)
    sm = saesteer.wrap(model, sae, tokenizer=tok, **({"hook": a.hook} if a.hook else {}))
    llm = load_llm(a.llm, model=a.llm_model)
    log = None if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    res = explain_features(sm, llm, texts, feats, methods=methods, min_examples=a.min_examples,
                           max_windows=a.max_windows, sage_calls=a.sage_calls, n_test=a.test_examples,
                           limit=None if a.features else a.n_features,
                           progress=not a.quiet, log=log)
    if not a.features:  # keep the first n_features that had enough examples
        kept = [f for f in sorted(res) if "skipped" not in res[f]][: a.n_features]
        res = {f: res[f] for f in kept}
    meta = {"llm": llm.name, "scorer": llm.name, "texts": a.texts, "max_windows": a.max_windows,
            "protocol": f"delphi detection + fuzzing, {a.test_examples} activating (10 quantiles, seed 22) + "
                        f"{a.test_examples} random non-activating 32-token windows, one shown at a time; "
                        "sage = saesteer's reading of SAGE"}
    path = store.save(out_dir, res, meta)
    return {"path": str(path), "results": res, "summary": summary(res, methods)}


def explain_main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        out = run(a)
    except SaesteerError as e:
        print(f"saesteer: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out['path']}")
    for row in out["summary"]:
        det, fz = row.get("detection_balanced_accuracy_mean"), row.get("fuzzing_balanced_accuracy_mean")
        if det is None:
            continue
        print(f"  {row['method']:8s} {row['features']:3d} features: detection {det:.3f} "
              f"(sd {row['detection_balanced_accuracy_sd']:.3f}), fuzzing {fz:.3f} (sd {row['fuzzing_balanced_accuracy_sd']:.3f})")
    print(json.dumps({"features_skipped": [f for f, r in out["results"].items() if "skipped" in r]}))
    return 0
