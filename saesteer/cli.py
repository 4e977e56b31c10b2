"""The ``saesteer`` command: steer, find features, train, inspect.

``saesteer generate "Tell me about the sea" --clamp 1234=8`` prints the unsteered and the steered
continuation side by side (one batched generate: row 0 plain, row 1 steered), on the embedded default
(SmolLM2-135M-Instruct + the bundled SAE) unless ``--model``/``--sae`` say otherwise.
``saesteer features --search shakespeare`` finds features by label; ``saesteer train`` trains an SAE.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import torch

import saesteer
from saesteer.errors import SaesteerError


def _pairs(items: Sequence[str], flag: str) -> list[tuple[int, float]]:
    out = []
    for s in items:
        try:
            i, v = s.split("=", 1)
            out.append((int(i), float(v)))
        except ValueError:
            raise SaesteerError(f"{flag} takes FEATURE=VALUE, got {s!r}") from None
    return out


def _edits(a: argparse.Namespace) -> list[saesteer.Edit]:
    edits: list[saesteer.Edit] = []
    edits += [saesteer.Clamp(i, v) for i, v in _pairs(a.clamp, "--clamp")]
    edits += [saesteer.Scale(i, v) for i, v in _pairs(a.scale, "--scale")]
    edits += [saesteer.Add(i, v) for i, v in _pairs(a.add, "--add")]
    edits += [saesteer.Erase(int(i)) for i in a.erase]
    return edits


def load_model(name: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``smollm2`` (the offline embedded model) or a local HuggingFace folder / hub id."""
    if name == "smollm2":
        from saesteer.embedded import load_smollm2

        return load_smollm2(dtype=dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except OSError as e:
        raise SaesteerError(f"cannot load model {name!r} (a local folder, or a hub id when online): {e}") from e
    return model.eval(), tok


def cmd_generate(a: argparse.Namespace) -> int:
    edits = _edits(a)
    if not edits:
        raise SaesteerError("give at least one edit: --clamp F=V, --scale F=S, --add F=A or --erase F")
    model, tok = load_model(a.model, torch.bfloat16 if a.bf16 else torch.float32)
    sm = saesteer.wrap(model, a.sae or _default_sae(), hook=a.hook, layer=a.layer, tokenizer=tok)
    tok.padding_side = "left"
    text = a.prompt
    if getattr(tok, "chat_template", None) and not a.raw:
        text = tok.apply_chat_template([{"role": "user", "content": a.prompt}], tokenize=False,
                                       add_generation_prompt=True)
    enc = tok([text, text], return_tensors="pt", padding=True)
    out = sm.generate(**enc, edits=[None, edits], positions=a.positions, max_new_tokens=a.max_new_tokens,
                      do_sample=False)
    n = enc["input_ids"].shape[1]
    plain, steered = (tok.decode(out[r, n:], skip_special_tokens=True).strip() for r in (0, 1))
    print(f"prompt : {a.prompt}\nedits  : {', '.join(map(repr, edits))}\n")
    print(f"--- unsteered ---\n{plain}\n\n--- steered ---\n{steered}")
    return 0


def _default_sae() -> str:
    from saesteer.embedded import default_sae_path

    return str(default_sae_path())


def cmd_features(a: argparse.Namespace) -> int:
    sae = saesteer.load_sae(a.sae or _default_sae())
    if sae.labels is None:
        raise SaesteerError("this SAE has no feature labels (feature_labels.json.gz beside it)")
    if a.show is not None:
        info = sae.labels.info(sae.check_feature(a.show))
        print(f"feature {a.show}: {info['label']}\n  fires on {info['density']:.3%} of tokens; "
              f"logit effect: {', '.join(map(repr, info['logit_tokens']))}")
        for c in info["contexts"]:
            print(f"  {c['value']:7.2f} [{c['source']}] {c['text']!r}")
        return 0
    if a.text is not None:
        model, tok = load_model(a.model)
        sm = saesteer.wrap(model, sae, tokenizer=tok)
        print(sm.features(**tok(a.text, return_tensors="pt"), top_k=a.top))
        return 0
    hits = sae.labels.search(a.search or "", top=a.top)
    if not hits:
        print(f"no feature matches {a.search!r}")
        return 1
    for m in hits:
        print(f"{m.feature:>6}  {m.score:6.1f}  {m.label}")
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    sae = saesteer.load_sae(a.path, hookpoint=a.hookpoint)
    for k, v in sae.cfg.to_dict().items():
        if v not in (None, {}, ""):
            print(f"{k:>22}: {v}")
    return 0


def cmd_hooks(a: argparse.Namespace) -> int:
    from saesteer.adapters import adapter_for

    model, _ = load_model(a.model)
    print(adapter_for(model).describe(model))
    return 0


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cmd_check(a: argparse.Namespace) -> int:
    """The conformance suite on a model + SAE: prints the PASS/FAIL table, exit code 1 on any FAIL."""
    if (a.feature is None) != (a.value is None):
        raise SaesteerError("--feature and --value go together")
    sae = a.sae or _default_sae()
    model, tok = load_model(a.model, DTYPES[a.dtype])
    report = saesteer.check(model, sae, hook=a.hook, layer=a.layer, tokenizer=tok, feature=a.feature,
                            value=a.value, max_new_tokens=a.max_new_tokens, progress=not a.no_progress)
    print(report.table())
    return 0 if report.passed else 1


def cmd_demo(a: argparse.Namespace) -> int:
    try:
        from saesteer.demos.app import serve
    except ImportError as e:
        raise SaesteerError(f"the demo needs Gradio: pip install 'saesteer[demo]' ({e})") from e
    serve(a)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saesteer", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="unsteered vs steered continuation of a prompt")
    g.add_argument("prompt")
    g.add_argument("--model", default="smollm2", help="'smollm2' (offline default), a folder or a hub id")
    g.add_argument("--sae", default=None, help="SAE folder/file or hub id (default: the bundled SAE)")
    g.add_argument("--hook", default=None, help="e.g. blocks.15.hook_resid_post (default: the SAE's own)")
    g.add_argument("--layer", type=int, default=None)
    g.add_argument("--clamp", action="append", default=[], metavar="F=V")
    g.add_argument("--scale", action="append", default=[], metavar="F=S")
    g.add_argument("--add", action="append", default=[], metavar="F=A")
    g.add_argument("--erase", action="append", default=[], metavar="F")
    g.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    g.add_argument("--max-new-tokens", type=int, default=40)
    g.add_argument("--bf16", action="store_true", help="run the model in bfloat16 (faster on CPU)")
    g.add_argument("--raw", action="store_true", help="no chat template")
    g.set_defaults(fn=cmd_generate)

    f = sub.add_parser("features", help="find features by label, show one, or see which fire on a text")
    f.add_argument("--search", default=None, metavar="WORDS", help="e.g. shakespeare, python, thou")
    f.add_argument("--show", type=int, default=None, metavar="F", help="one feature's record")
    f.add_argument("--text", default=None, help="print the top features of every token of this text")
    f.add_argument("--sae", default=None)
    f.add_argument("--model", default="smollm2")
    f.add_argument("--top", type=int, default=10)
    f.set_defaults(fn=cmd_features)

    t = sub.add_parser("train", help="train an SAE (see `saesteer train --help`)", add_help=False)
    t.set_defaults(fn=None)

    i = sub.add_parser("inspect", help="print an SAE's configuration")
    i.add_argument("path")
    i.add_argument("--hookpoint", default=None)
    i.set_defaults(fn=cmd_inspect)

    h = sub.add_parser("hooks", help="list the hook names of a model")
    h.add_argument("--model", default="smollm2")
    h.set_defaults(fn=cmd_hooks)

    c = sub.add_parser("check", help="conformance suite: is steering exact on this model, SAE, dtype and stack?")
    c.add_argument("--model", default="smollm2", help="'smollm2' (offline default), a folder or a hub id")
    c.add_argument("--sae", default=None, help="SAE folder/file or hub id (default: the bundled SAE)")
    c.add_argument("--hook", default=None, help="default: the hook the SAE names")
    c.add_argument("--layer", type=int, default=None)
    c.add_argument("--dtype", default="float32", choices=list(DTYPES))
    c.add_argument("--feature", type=int, default=None, help="the clamped feature (default: the most active)")
    c.add_argument("--value", type=float, default=None, help="its clamp value (default: 4x its activation)")
    c.add_argument("--max-new-tokens", type=int, default=8)
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(fn=cmd_check)

    from saesteer.demos.options import add_demo_arguments  # argparse only: Gradio loads in cmd_demo

    d = add_demo_arguments(sub.add_parser("demo", help="the browser app: steer and explain features live "
                                                       "(offline, on 127.0.0.1 unless --host says otherwise)"))
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``saesteer`` command; errors are printed, not raised."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        from saesteer.train.cli import train_main

        return int(train_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except SaesteerError as e:
        print(f"saesteer: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
