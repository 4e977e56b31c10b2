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


def _is_auto(s: str) -> bool:
    v = s.partition("=")[2].strip().lower()
    return v == "auto" or v.startswith("auto:")


def _auto_clamps(a: argparse.Namespace) -> list[tuple[int, float]]:
    """``(feature, perplexity budget)`` of each ``--clamp F=auto`` (budget 1.5) or ``F=auto:B``: their
    strength comes from a small steering sweep."""
    out = []
    for s in a.clamp:
        if _is_auto(s):
            f, _, v = s.partition("=")
            try:
                out.append((int(f), float(v.strip()[5:]) if ":" in v else 1.5))
            except ValueError:
                raise SaesteerError(f"--clamp takes FEATURE=VALUE, FEATURE=auto or FEATURE=auto:BUDGET, "
                                    f"got {s!r}") from None
    return out


def _auto_edits(sm: Any, features: list[tuple[int, float]], chat: bool) -> list[Any]:
    """One small steering sweep per ``--clamp F=auto[:B]`` (saesteer.eval.steering.auto_sweep: clamp and
    clamp_generated at 0.25x, 0.5x, 1x the feature's reference activation on 3 neutral prompts, perplexity
    budget B x the unsteered); prints the chosen setting and its perplexity ratio, returns its edits."""
    from saesteer.eval.steering import auto_sweep

    edits: list[Any] = []
    for f, budget in features:
        res = auto_sweep(sm, f, hook=sm.attachment_name(), chat=chat, budget=budget)
        print(f"auto     : {res.summary()}")
        edits += res.edits().edits  # EditError (a SaesteerError) when nothing fits the budget
    return edits


def _edits(a: argparse.Namespace) -> list[saesteer.Edit]:
    edits: list[saesteer.Edit] = []
    edits += [saesteer.Clamp(i, v) for i, v in _pairs([s for s in a.clamp if not _is_auto(s)], "--clamp")]
    edits += [saesteer.Scale(i, v) for i, v in _pairs(a.scale, "--scale")]
    edits += [saesteer.Add(i, v) for i, v in _pairs(a.add, "--add")]
    edits += [saesteer.Erase(int(i)) for i in a.erase]
    return edits


def load_model(name: str, dtype: Any = None) -> tuple[Any, Any]:
    """``smollm2`` (the offline embedded model) or a local HuggingFace folder / hub id, in ``dtype`` (a torch
    dtype or its name; float32 by default). A hub id with
    the hub unreachable is read from the local cache only, and fails at once when it is not there
    (one connection probe, no retries)."""
    import torch

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    if name == "smollm2":
        from saesteer.embedded import load_smollm2

        return load_smollm2(dtype=dtype)
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name).expanduser().exists()
    offline = False
    if not local:
        from saesteer.sae.formats.hub import hub_reachable

        offline = not hub_reachable()
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=offline)
    except (OSError, ValueError) as e:
        if offline:
            raise SaesteerError(f"cannot load model {name!r}: it is not a local folder, the HuggingFace hub is "
                                "unreachable and the model is not in the local cache. Download it where the hub is "
                                "reachable and pass its folder: --model /path/to/model") from None
        raise SaesteerError(f"cannot load model {name!r} (a local folder, or a hub id when online): {e}") from e
    return model.eval(), tok


#: above these, a CLI edit value is suspicious (the demo refuses them): warn, naming the feature's largest
#: activation seen in the SAE's labelling corpus when the SAE has labels
WARN_ABS_VALUE, WARN_ABS_SCALE = 1000.0, 100.0


def _check_values(edits: list, sae: Any) -> None:
    """Feature indices are checked against the SAE file before any model loads; values far outside what
    the feature ever reaches get a warning on stderr."""
    for e in edits:
        sae.check_feature(e.feature)
    for e in edits:
        v = getattr(e, "value", getattr(e, "amount", None))
        seen = None
        if sae.labels is not None:
            try:
                seen = float(sae.labels.info(e.feature).get("max_activation") or 0) or None
            except (KeyError, TypeError, ValueError):
                seen = None
        big = (v is not None and (abs(v) > WARN_ABS_VALUE or (seen and abs(v) > 20 * seen))) or \
            (isinstance(e, saesteer.Scale) and abs(e.factor) > WARN_ABS_SCALE)
        if big:
            where = f"; its largest activation seen is {seen:.1f}" if seen else ""
            print(f"saesteer: warning: {e!r} is far outside feature {e.feature}'s range{where} "
                  f"(the demo caps values at {WARN_ABS_VALUE:g}, scales at {WARN_ABS_SCALE:g}): expect broken text",
                  file=sys.stderr)


def _check_layer(a: argparse.Namespace, sae: Any) -> None:
    """--layer L against the hook the SAE records, before the model loads (the full check, any hook
    name, runs again when the SAE is attached)."""
    import re

    m = re.match(r"^blocks\.(\d+)\.", sae.cfg.hook_name or "")
    if a.layer is not None and m and int(m.group(1)) != a.layer and not a.force_hook:
        raise SaesteerError(f"this SAE was trained at {sae.cfg.hook_name}, not at layer {a.layer}: leave out "
                            "--layer to use its own hook, or pass --force-hook if you know it fits")


class _Ticks:
    """A logits processor that only moves a progress bar, one tick per generated token."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.bar.update(1)
        return scores


def _silent_features(sm: Any, ids: Any, edits: list) -> list[tuple[int, float]]:
    """(feature, max activation) of the erased/scaled features over ``ids [1, T]`` at the hook."""
    import torch

    from saesteer.runtime import taps

    feats = sorted({e.feature for e in edits if isinstance(e, (saesteer.Erase, saesteer.Scale))})
    if not feats:
        return []
    att = sm.attachment()
    with torch.no_grad(), taps.tap(att.point, stop=True) as t:
        sm.model(input_ids=ids)
    acts = att.sae.encode_subset(t.x.to(att.sae.dtype), torch.tensor(feats, device=t.x.device))
    top = acts.reshape(-1, len(feats)).amax(0).float()
    return [(f, float(v)) for f, v in zip(feats, top)]


def cmd_generate(a: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    edits = _edits(a)
    auto = _auto_clamps(a)
    if not edits and not auto:
        raise SaesteerError("give at least one edit: --clamp F=V (or F=auto), --scale F=S, --add F=A or --erase F")
    sae = saesteer.load_sae(a.sae or _default_sae())  # checked before the model loads (seconds)
    for f, _ in auto:
        sae.check_feature(f)
    _check_values(edits, sae)
    _check_layer(a, sae)
    model, tok = load_model(a.model, "bfloat16" if a.bf16 else "float32")
    sm = saesteer.wrap(model, sae, hook=a.hook, layer=a.layer, tokenizer=tok, force_hook=a.force_hook)
    edits += _auto_edits(sm, auto, chat=not a.raw)
    tok.padding_side = "left"
    text = a.prompt
    if getattr(tok, "chat_template", None) and not a.raw:
        text = tok.apply_chat_template([{"role": "user", "content": a.prompt}], tokenize=False,
                                       add_generation_prompt=True)
    enc = tok([text, text], return_tensors="pt", padding=True)
    with tqdm(total=a.max_new_tokens, desc="generating", unit="tok", file=sys.stderr, leave=False) as bar:
        out = sm.generate(**enc, edits=[None, edits], positions=a.positions, max_new_tokens=a.max_new_tokens,
                          do_sample=False, logits_processor=[_Ticks(bar)])
    n = enc["input_ids"].shape[1]
    plain, steered = (tok.decode(out[r, n:], skip_special_tokens=True).strip() for r in (0, 1))
    print(f"prompt   : {a.prompt}\nhook     : {sm.attachment_name()}\npositions: {a.positions}\n"
          f"edits    : {', '.join(map(repr, edits))}\n")
    print(f"--- unsteered ---\n{plain}\n\n--- steered ---\n{steered}")
    if plain == steered:
        silent = [(f, v) for f, v in _silent_features(sm, out[:1], edits) if v <= 0]
        why = ("; ".join(f"feature {f} never fired on these tokens (max activation {v:.2f}), so erasing or scaling "
                         "it changes nothing" for f, v in silent) if silent else
               "the edit did not change any greedy token; try a larger value or another feature")
        print(f"\nnote: the steered text equals the unsteered one: {why}")
    return 0


def _default_sae() -> str:
    from saesteer.embedded import default_sae_path

    return str(default_sae_path())


def cmd_features(a: argparse.Namespace) -> int:
    if a.show is None and a.text is None and a.search is None:
        print("saesteer features: say what to show: --search WORDS (find features by label), --show F (one "
              "feature's record) or --text TEXT (the features of every token)", file=sys.stderr)
        return 2
    sae = saesteer.load_sae(a.sae or _default_sae())
    if a.text is not None:
        return _features_of_text(a, sae)
    if sae.labels is None:
        raise SaesteerError("this SAE has no feature labels (feature_labels.json.gz beside it); make them with "
                            "`saesteer label --sae PATH`")
    if a.show is not None:
        f = sae.check_feature(a.show)
        if f not in sae.labels:
            raise SaesteerError(f"feature {f} has no label or explanation in this SAE's labels")
        info = sae.labels.info(f)
        print(f"feature {f}: {sae.labels[f]}")
        if info.get("explanation"):
            print(f"  explanation from {info.get('explanation_source')}; automatic label: {info.get('label') or 'none'}")
            sc = info.get("explanation_scores") or {}
            if sc:
                print("  scores (balanced accuracy): " + ", ".join(
                    f"{k} {v:.2f}" for k, v in sc.items() if isinstance(v, (int, float))) +
                      (f"; method {sc['method']}" if sc.get("method") else ""))
        if "density" in info:
            print(f"  fires on {info['density']:.3%} of tokens; logit effect: "
                  f"{', '.join(map(repr, info.get('logit_tokens', [])))}")
        for c in info.get("contexts", []):
            print(f"  {c['value']:7.2f} [{c['source']}] {c['text']!r}")
        return 0
    hits = sae.labels.search(a.search, top=a.top)
    if not hits:
        print(f"no feature matches {a.search!r}")
        return 1
    for m in hits:
        print(f"{m.feature:>6}  {m.score:6.1f}  {m.label}")
    return 0


def _features_of_text(a: argparse.Namespace, sae: Any) -> int:
    """Each token's top features, then the text's top features by their largest activation. Position 0
    is the attention-sink token (activations in the thousands on most models): marked, and left out of
    the ranking."""
    model, tok = load_model(a.model)
    sm = saesteer.wrap(model, sae, tokenizer=tok, force_hook=a.force_hook)
    acts = sm.features(**tok(a.text, return_tensors="pt"), top_k=a.top)
    labels = sae.labels
    print(f"features at {acts.hook}:")
    best: dict[int, float] = {}
    for rec in acts.to_records():
        sink = rec["position"] == 0
        shown = ", ".join(f"{d['feature']}={d['value']:.2f}" for d in rec["features"][:5])
        print(f"  [{rec['position']:>3}] {rec['token']!r:>14}  {shown}" + ("   (attention sink: not ranked)" if sink else ""))
        if not sink:
            for d in rec["features"]:
                best[d["feature"]] = max(best.get(d["feature"], 0.0), d["value"])
    print("\ntop features of the text (position 0 left out):")
    for f, v in sorted(best.items(), key=lambda kv: -kv[1])[:a.top]:
        label = labels.get(f) if labels is not None else None
        print(f"{f:>6}  {v:8.2f}  {label or ''}")
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    path = a.path or _default_sae()
    sae = saesteer.load_sae(path, hookpoint=a.hookpoint)
    print(f"{'path':>22}: {path}")
    for k, v in sae.cfg.to_dict().items():
        if v not in (None, {}, ""):
            print(f"{k:>22}: {v}")
    return 0


def cmd_hooks(a: argparse.Namespace) -> int:
    from saesteer.adapters import adapter_for

    model, _ = load_model(a.model)
    print(adapter_for(model).describe(model))
    return 0


DTYPES = ("float32", "bfloat16", "float16")


def cmd_check(a: argparse.Namespace) -> int:
    """The conformance suite on a model + SAE: prints the PASS/FAIL table, exit code 1 on any FAIL."""
    if (a.feature is None) != (a.value is None):
        raise SaesteerError("--feature and --value go together")
    sae = a.sae or _default_sae()
    model, tok = load_model(a.model, a.dtype)
    if a.force_hook:
        sae = saesteer.wrap(model, sae, hook=a.hook, layer=a.layer, tokenizer=tok, force_hook=True)
        model, a.hook, a.layer, sae = sae, None, None, None
    report = saesteer.check(model, sae, hook=a.hook, layer=a.layer, tokenizer=tok, feature=a.feature,
                            value=a.value, max_new_tokens=a.max_new_tokens, progress=not a.no_progress)
    print(report.table())
    return 0 if report.passed else 1


def cmd_serve(a: argparse.Namespace) -> int:
    """The OpenAI-compatible steering server (FastAPI + uvicorn), until interrupted."""
    try:
        from saesteer.serve import ServeLimits, make_server, serve
    except ImportError as e:
        raise SaesteerError(f"the server needs FastAPI and uvicorn: pip install 'saesteer[serve]' ({e})") from e
    limits = ServeLimits(max_tokens=a.max_tokens_limit, max_edits=a.max_edits)
    server = make_server(a.model, a.sae, hook=a.hook, dtype=a.dtype, max_batch=a.max_batch, api_key=a.api_key,
                         limits=limits, force_hook=a.force_hook, window_s=a.batch_window_ms / 1000)
    print(f"saesteer serve: {a.model} + {server.sm.attachment_name()} on http://{a.host}:{a.port}/v1 "
          f"(max batch {a.max_batch}{', API key required' if a.api_key else ''})", flush=True)
    serve(server, host=a.host, port=a.port)
    return 0


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
    g.add_argument("--clamp", action="append", default=[], metavar="F=V",
                   help="clamp feature F to V; F=auto picks the clamp by a small steering sweep (the one that "
                        "raises F on the output most within 1.5x the unsteered perplexity; F=auto:3 allows 3x)")
    g.add_argument("--scale", action="append", default=[], metavar="F=S")
    g.add_argument("--add", action="append", default=[], metavar="F=A")
    g.add_argument("--erase", action="append", default=[], metavar="F")
    g.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    g.add_argument("--max-new-tokens", type=int, default=40)
    g.add_argument("--bf16", action="store_true", help="run the model in bfloat16 (faster on CPU)")
    g.add_argument("--raw", action="store_true", help="no chat template")
    g.add_argument("--force-hook", action="store_true", help="attach the SAE at --hook/--layer even when it "
                   "was trained at another hook")
    g.set_defaults(fn=cmd_generate)

    f = sub.add_parser("features", help="find features by label, show one, or see which fire on a text")
    f.add_argument("--search", default=None, metavar="WORDS", help="e.g. shakespeare, python, thou")
    f.add_argument("--show", type=int, default=None, metavar="F", help="one feature's record")
    f.add_argument("--text", default=None, help="print the top features of every token of this text")
    f.add_argument("--sae", default=None)
    f.add_argument("--model", default="smollm2")
    f.add_argument("--top", type=int, default=10)
    f.add_argument("--force-hook", action="store_true")
    f.set_defaults(fn=cmd_features)

    t = sub.add_parser("train", help="train an SAE (see `saesteer train --help`)", add_help=False)
    t.set_defaults(fn=None)
    lb = sub.add_parser("label", help="label every feature of an SAE from text (see `saesteer label --help`)",
                        add_help=False)
    lb.set_defaults(fn=None)
    ex = sub.add_parser("explain", help="explain features in words and score the explanations (delphi detection "
                                        "and fuzzing, a SAGE-style loop; see `saesteer explain --help`)", add_help=False)
    ex.set_defaults(fn=None)
    ev = sub.add_parser("eval", help="an SAE's report card: reconstruction, sparsity, L0 diagnostics, "
                                     "monosemanticity vs neurons, steering strength (see `saesteer eval --help`)",
                        add_help=False)
    ev.set_defaults(fn=None)

    i = sub.add_parser("inspect", help="print an SAE's configuration")
    i.add_argument("path", nargs="?", default=None, help="default: the bundled SAE")
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
    c.add_argument("--force-hook", action="store_true")
    c.set_defaults(fn=cmd_check)

    sv = sub.add_parser("serve", help="OpenAI-compatible steering server (on 127.0.0.1 unless --host says otherwise)")
    sv.add_argument("--model", default="smollm2", help="'smollm2' (offline default), a folder or a hub id")
    sv.add_argument("--sae", default=None, help="SAE folder/file or hub id (default: the bundled SAE)")
    sv.add_argument("--hook", default=None)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 serves the network)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-key", default=None, help="require Authorization: Bearer <key>")
    sv.add_argument("--max-batch", type=int, default=16, help="requests served in one batched generate")
    sv.add_argument("--batch-window-ms", type=float, default=100, help="how long an idle server waits for more requests")
    sv.add_argument("--dtype", default="float32", choices=list(DTYPES))
    sv.add_argument("--max-tokens-limit", type=int, default=256, help="largest max_tokens a request may ask")
    sv.add_argument("--max-edits", type=int, default=8, help="most edits per request")
    sv.add_argument("--force-hook", action="store_true")
    sv.set_defaults(fn=cmd_serve)

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
    if argv[:1] == ["label"]:
        from saesteer.labeling import label_main

        return int(label_main(argv[1:]) or 0)
    if argv[:1] == ["eval"]:
        from saesteer.eval.cli import eval_main

        return int(eval_main(argv[1:]) or 0)
    if argv[:1] == ["explain"]:
        from saesteer.explain.cli import explain_main

        return int(explain_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except SaesteerError as e:
        print(f"saesteer: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
