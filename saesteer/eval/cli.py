"""``saesteer eval``: write an SAE's report card (``report.html`` + ``report.json``).

    saesteer eval                                         # the bundled SAE on SmolLM2, the corpus by source
    saesteer eval --model M --sae S [--hook H] --data labelled.jsonl --out report/
    saesteer eval --sae S1 --sweep S2 S3 S4               # s_n against L0 over several SAEs of one hook
    saesteer eval --steer 1309                            # add a calibrated steering curve for feature 1309
    saesteer eval --vision                                # the tiny LLaVA's vision SAE on its 16 stamp kinds
    saesteer eval --vision --images DIR [--model LLAVA --sae S]   # your images, one subfolder per class
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

from saesteer.errors import SaesteerError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saesteer eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2 (embedded), a local folder or a hub id")
    p.add_argument("--sae", default=None, help="SAE path, hub id or release (default: the bundled SAE)")
    p.add_argument("--hook", default=None, help="the hook (default: the SAE's own hook_name)")
    p.add_argument("--data", default="corpus",
                   help="labelled JSON lines ({'text', 'label'} or {'text', 'token_labels'}), or 'corpus': the "
                        "built-in corpus held-out split labelled by source")
    p.add_argument("--per-label", type=int, default=30, help="documents per label from the built-in corpus")
    p.add_argument("--max-docs", type=int, default=None, help="read at most this many documents from --data")
    p.add_argument("--max-len", type=int, default=64, help="tokens per document")
    p.add_argument("--max-rows", type=int, default=8192, help="tokens in all")
    p.add_argument("--ce-docs", type=int, default=32, help="documents for CE-loss recovered and KL")
    p.add_argument("--sweep", nargs="*", default=[], help="more SAEs of the same hook: s_n against L0")
    p.add_argument("--steer", type=int, default=None, help="also sweep steering strengths for this feature")
    p.add_argument("--no-neurons", action="store_true", help="skip the neuron baseline")
    p.add_argument("--depth", type=int, default=3, help="FMS: trees of depth 1..DEPTH")
    p.add_argument("--vision", action="store_true",
                   help="the embedded tiny LLaVA's vision SAE, labelled by the gallery's 16 stamp kinds")
    p.add_argument("--images", default=None,
                   help="with --vision: a folder of images, one subfolder per class (default: the tiny LLaVA's gallery)")
    p.add_argument("--per-class", type=int, default=None, help="with --images: at most this many images per class")
    p.add_argument("--out", default="report", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _ids(tok: Any, texts: Sequence[str], max_len: int) -> tuple[Any, Any]:
    import torch

    enc = [tok(t, truncation=True, max_length=max_len)["input_ids"] for t in texts]
    enc = [e for e in enc if len(e) >= 2]
    T = max(len(e) for e in enc)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([e + [pad] * (T - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (T - len(e)) for e in enc])
    return ids, mask


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Build the report the arguments describe; returns the card dict (also written to ``--out``)."""
    import saesteer
    from saesteer.cli import load_model
    from saesteer.eval.card import report_card
    from saesteer.eval.collect import collect, corpus_labelled, load_labelled
    from saesteer.eval.html import render
    from saesteer.train.metrics import evaluate_sae

    if a.vision:
        return run_vision(a)
    sae_path = a.sae
    if sae_path is None:
        from saesteer.embedded import default_sae_path

        sae_path = str(default_sae_path())
    sae = saesteer.load_sae(sae_path)
    hook = a.hook or sae.cfg.hook_name
    if not hook:
        raise SaesteerError("the SAE names no hook: pass --hook")
    data = corpus_labelled(a.per_label) if a.data == "corpus" else load_labelled(a.data, a.max_docs)
    sweep = [(s, saesteer.load_sae(s)) for s in a.sweep]
    for name, s in sweep:
        if s.d_in != sae.d_in:
            raise SaesteerError(f"--sweep {name}: d_in {s.d_in} differs from the SAE's {sae.d_in}")
    model, tok = load_model(a.model)
    acts = collect(model, tok, hook, data, max_len=a.max_len, max_rows=a.max_rows, progress=not a.quiet)
    order = sorted(range(len(data.texts)), key=lambda i: (i * 7919) % len(data.texts))[: a.ce_docs]
    ids, mask = _ids(tok, [data.texts[i] for i in order], a.max_len)
    rec = evaluate_sae(sae, model, hook, ids, mask)
    rec = {k: rec[k] for k in ("ce_clean", "ce_spliced", "ce_zero_ablated", "ce_loss_recovered", "kl_spliced") if k in rec}
    card = report_card(sae, acts, reconstruction=rec, sweep=sweep, neurons=not a.no_neurons, depth=a.depth,
                       progress=not a.quiet)
    card["sae"]["path"] = sae_path
    extra = ""
    if a.steer is not None:
        from saesteer.eval.steering import steering_sweep

        sm = saesteer.wrap(model, sae, hook=hook, tokenizer=tok)
        res = steering_sweep(sm, a.steer, progress=not a.quiet)
        card["steering"] = res.to_json()
        extra = f"<h2>Steering strength for feature {a.steer}</h2>{res.svg()}"
    _write(a, card, render(card, extra))
    return card


def run_vision(a: argparse.Namespace) -> dict[str, Any]:
    """The report for a vision SAE, on every patch token of each image, labelled by the image's class
    (no CE or KL: the tower has no next-token loss of its own). Default: the embedded tiny LLaVA with
    its shipped SAE and its gallery's 16 stamp kinds; ``--images DIR`` gives the images,
    ``--model``/``--sae`` a LLaVA-style model (local folder, or hub id when online) and its SAE."""
    from saesteer.eval.card import report_card
    from saesteer.eval.collect import collect_images, images_from_folder
    from saesteer.eval.html import render

    images = images_from_folder(a.images, a.per_class) if a.images else None  # bad folders fail before loading
    if a.model == "smollm2" and a.sae is None:
        from saesteer.embedded.vlm import load_tiny_llava_steered, tiny_llava_gallery, tiny_llava_path

        sm, proc = load_tiny_llava_steered()
        images = images or tiny_llava_gallery()
        sae_path = str(tiny_llava_path() / "sae")
    else:
        if a.model == "smollm2" or a.sae is None:
            raise SaesteerError("--vision with your own model needs both --model (a LLaVA-style folder or hub id) "
                                "and --sae; without either it reports the embedded tiny LLaVA")
        if images is None:
            raise SaesteerError("--vision with your own model needs --images DIR (one subfolder per class)")
        sm, proc = _load_vlm(a.model, a.sae, a.hook)
        sae_path = a.sae
    acts = collect_images(sm, proc, images, hook=a.hook, progress=not a.quiet)
    card = report_card(sm.attachment(a.hook).sae, acts, neurons=not a.no_neurons, depth=a.depth,
                       progress=not a.quiet)
    card["sae"]["path"] = sae_path
    _write(a, card, render(card))
    return card


def _load_vlm(name: str, sae: str, hook: str | None) -> tuple[Any, Any]:
    """A LLaVA-style model and its processor (local folder, or hub id from the cache when offline, failing
    at once when absent), wrapped with ``sae`` at ``hook`` (default: the hook the SAE names, else the
    layer the model reads)."""
    from pathlib import Path

    from transformers import AutoModelForImageTextToText, AutoProcessor

    import saesteer

    offline = False
    if not Path(name).expanduser().exists():
        from saesteer.sae.formats.hub import hub_reachable

        offline = not hub_reachable()
    try:
        proc = AutoProcessor.from_pretrained(name, local_files_only=offline)
        model = AutoModelForImageTextToText.from_pretrained(name, local_files_only=offline)
    except (OSError, ValueError) as e:
        where = "it is not a local folder and the hub is unreachable" if offline else str(e)
        raise SaesteerError(f"cannot load vision-language model {name!r}: {where}") from None
    return saesteer.wrap(model.eval(), sae, **({"hook": hook} if hook else {})), proc


def _write(a: argparse.Namespace, card: dict[str, Any], page: str) -> None:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(card, default=_plain, allow_nan=True))
    (out / "report.html").write_text(page, encoding="utf-8")


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    raise TypeError(f"not JSON: {type(v).__name__}")


def eval_main(argv: Sequence[str] | None = None) -> int:
    import sys

    from saesteer.eval.html import headline

    a = parser().parse_args(argv)
    try:
        card = run(a)
    except SaesteerError as e:
        print(f"saesteer: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {Path(a.out) / 'report.html'} and report.json")
    for label, s, n, _ in headline(card):
        print(f"  {label}: SAE {s:.4g} | neurons {n:.4g}")
    return 0
