"""``saesteer train``: train an SAE on a model's activations from text files.

    saesteer train --model smollm2 --hook blocks.15.hook_resid_post --text corpus/ --out runs/l15 \\
        --architecture topk --k 32 --expansion-factor 8 --total-tokens 2000000

``--architecture``: topk, batchtopk, jumprelu, gated, p_anneal, matryoshka, ordered (the losses and
what each reproduces: :mod:`saesteer.train.losses`).

``--model`` is a local HuggingFace folder or ``smollm2`` (the embedded SmolLM2-135M-Instruct).
``--text`` is a file or a folder of ``.txt``/``.md`` files (split at blank lines) and ``.jsonl`` files
(one ``{"text": ...}`` per line). The first ``--eval-seqs`` packed sequences are held out for the
card's metrics (L0, FVU, dead fraction, CE-loss recovered). ``--cache DIR`` stores activations on
disk once and trains from there (later runs with the same DIR reuse it). Runs resume from
``OUT/checkpoint`` unless ``--no-resume``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Iterator

import torch

from saesteer.train.config import ARCHITECTURES, TrainConfig

TEXT_SUFFIXES = (".txt", ".md", ".text")
_PIECE_CHARS = 1 << 16


class TextFiles:
    """Documents from a file or a folder, read lazily and again on every iteration (so epochs work).

    Plain text is split at blank lines (and into pieces of at most 64k characters); ``.jsonl`` gives
    the ``text`` field of every line. Files are visited in sorted order.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f"no such text file or folder: {self.path}")
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.rglob("*") if p.is_file()
                                and p.suffix.lower() in TEXT_SUFFIXES + (".jsonl",))
        else:
            self.files = [self.path]
        if not self.files:
            raise FileNotFoundError(f"{self.path} holds no .txt, .md or .jsonl files")

    def __iter__(self) -> Iterator[str]:
        for f in self.files:
            if f.suffix.lower() == ".jsonl":
                yield from self._jsonl(f)
            else:
                yield from self._plain(f)

    @staticmethod
    def _jsonl(f: Path) -> Iterator[str]:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    text = json.loads(line).get("text")
                    if isinstance(text, str) and text:
                        yield text

    @staticmethod
    def _plain(f: Path) -> Iterator[str]:
        piece: list[str] = []
        size = 0
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip() or size > _PIECE_CHARS:
                    if size:
                        yield "".join(piece)
                    piece, size = [], 0
                    if not line.strip():
                        continue
                piece.append(line)
                size += len(line)
        if size:
            yield "".join(piece)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="saesteer train", description="Train an SAE on a model's activations.")
    p.add_argument("--model", required=True, help="local HuggingFace model folder, or 'smollm2'")
    p.add_argument("--hook", required=True, help="hook name, e.g. blocks.15.hook_resid_post")
    p.add_argument("--text", required=True, help="text file or folder (.txt/.md/.jsonl)")
    p.add_argument("--out", required=True, help="output folder (SAELens files, card, checkpoint)")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="topk")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--d-sae", type=int, default=None)
    p.add_argument("--expansion-factor", type=int, default=8)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--total-tokens", type=int, default=2_000_000)
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--model-batch", type=int, default=8, help="sequences per model forward")
    p.add_argument("--buffer-tokens", type=int, default=1 << 17, help="in-memory shuffle buffer (rows)")
    p.add_argument("--cache", default=None, help="on-disk activation cache folder (built once, reused)")
    p.add_argument("--cache-dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument("--eval-seqs", type=int, default=64, help="held-out sequences for the card's metrics (64 x "
                   "--context tokens: a held-out dead fraction over N tokens counts features rarer than 1/N as dead)")
    p.add_argument("--keep-first", action="store_true", help="keep position 0 (BOS/attention sink)")
    p.add_argument("--auxk-alpha", type=float, default=1 / 32)
    p.add_argument("--dead-tokens", type=int, default=None)
    p.add_argument("--l0-coefficient", type=float, default=2e-3)
    p.add_argument("--k-anneal-steps", type=int, default=0, help="TopK-family: anneal k linearly from "
                   "--k-start (default d_in) to --k over this many steps")
    p.add_argument("--k-start", type=int, default=None)
    p.add_argument("--sparsity-coefficient", type=float, default=0.1,
                   help="gated: lambda of the gate L1; p_anneal: initial alpha")
    p.add_argument("--sparsity-warmup-steps", type=int, default=None)
    p.add_argument("--sparsity-function", choices=("Lp^p", "Lp"), default="Lp^p", help="p_anneal")
    p.add_argument("--p-start", type=float, default=1.0, help="p_anneal")
    p.add_argument("--p-end", type=float, default=0.2, help="p_anneal")
    p.add_argument("--anneal-start", type=int, default=None, help="p_anneal: step of the first switch")
    p.add_argument("--n-sparsity-updates", type=int, default=10, help="p_anneal")
    p.add_argument("--group-fractions", type=float, nargs="+", default=None,
                   help="matryoshka: fractions of d_sae per group (sum 1; default 1/16 1/16 1/8 1/4 1/2)")
    p.add_argument("--recon-weighting", choices=("none", "inverse_variance"), default="none",
                   help="topk/batchtopk: identifiable-SAE reweighted reconstruction (saesteer's reading)")
    p.add_argument("--b-dec-init", choices=("geometric_median", "mean", "zeros"), default="geometric_median")
    p.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.999))
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--encode-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="dtype of the dense encoder matmul that picks the latents (TopK/BatchTopK)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--max-steps", type=int, default=None, help="stop (with a checkpoint) after this many steps")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--device", default="cpu", help="where the SAE trains (and the model runs, without --device-map);"
                   " under torchrun 'cuda' means each rank's cuda:LOCAL_RANK")
    p.add_argument("--device-map", default=None, help="load the model with this transformers device_map (e.g. auto: "
                   "split over the GPUs); activations come back to the CPU for the SAE")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="model dtype")
    p.add_argument("--no-progress", action="store_true")
    return p


def _load_model(name: str, device: str, dtype: torch.dtype, device_map: str | None = None):  # noqa: ANN202
    """``(model, tokenizer)``; with ``device_map`` the model is placed by transformers (accelerate)."""
    if name.lower() in ("smollm2", "smollm2-135m-instruct"):
        from saesteer.embedded import load_smollm2

        if device_map is not None:
            raise SystemExit("--device-map is for HuggingFace model folders; the embedded SmolLM2 takes --device")
        return load_smollm2(dtype=dtype, device=device)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device_map is not None:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, device_map=device_map).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(name)


def train_main(argv: list[str] | None = None) -> int:
    """Run ``saesteer train`` with ``argv`` (without the program and sub-command names); returns
    the exit status. Cost: loading the model, the training run and three forwards per held-out batch."""
    from saesteer.train import distributed
    from saesteer.train.activations import ActivationSource
    from saesteer.train.cache import CachedActivations, is_complete_cache
    from saesteer.train.metrics import evaluate_sae
    from saesteer.train.trainer import train_sae

    if argv is None:
        argv = sys.argv[1:]
        if argv and argv[0] == "train":
            argv = argv[1:]
    args = build_parser().parse_args(argv)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    distributed.init_from_env(args.device)  # under torchrun / accelerate launch: data-parallel training
    device = distributed.local_device(args.device)
    model, tokenizer = _load_model(args.model, device, dtypes[args.dtype], args.device_map)
    texts = TextFiles(args.text)
    model_name = "SmolLM2-135M-Instruct" if args.model.lower().startswith("smollm2") else args.model
    src = ActivationSource(model, args.hook, texts, tokenizer=tokenizer, context_length=args.context_length,
                           model_batch=args.model_batch, buffer_tokens=args.buffer_tokens,
                           drop_first=not args.keep_first, skip_chunks=args.eval_seqs, seed=args.seed,
                           model_name=model_name)
    held_out = list(src.chunks(stop=args.eval_seqs))
    source = src
    if args.cache:
        if not is_complete_cache(args.cache) and distributed.is_main():  # one rank writes, the others wait
            print(f"caching activations to {args.cache} ...", file=sys.stderr)
            src.cache(args.cache, max_tokens=args.total_tokens, dtype=dtypes[args.cache_dtype])
        distributed.barrier()
        source = CachedActivations(args.cache, buffer_tokens=args.buffer_tokens, seed=args.seed)
        if source.hook not in (None, src.hook):
            raise SystemExit(f"{args.cache} holds activations of {source.hook}, not {src.hook}")
    cfg = TrainConfig(architecture=args.architecture, d_sae=args.d_sae, expansion_factor=args.expansion_factor,
                      k=args.k, lr=args.lr, batch_tokens=args.batch_tokens, total_tokens=args.total_tokens,
                      auxk_alpha=args.auxk_alpha, dead_tokens=args.dead_tokens, l0_coefficient=args.l0_coefficient,
                      seed=args.seed, checkpoint_every=args.checkpoint_every, device=device,
                      encode_dtype=args.encode_dtype, k_anneal_steps=args.k_anneal_steps, k_start=args.k_start,
                      sparsity_coefficient=args.sparsity_coefficient,
                      sparsity_warmup_steps=args.sparsity_warmup_steps, sparsity_function=args.sparsity_function,
                      p_start=args.p_start, p_end=args.p_end, anneal_start=args.anneal_start,
                      n_sparsity_updates=args.n_sparsity_updates,
                      group_fractions=tuple(args.group_fractions) if args.group_fractions else None,
                      adam_betas=tuple(args.adam_betas), grad_clip=args.grad_clip,
                      recon_weighting=args.recon_weighting, b_dec_init=args.b_dec_init,
                      hook_name=src.hook, model_name=src.model_name)

    def evaluate(sae):  # noqa: ANN001, ANN202
        if not held_out:
            return {}
        return evaluate_sae(sae, model, src.hook, torch.stack(held_out), batch_size=args.model_batch,
                            drop_first=not args.keep_first)

    command = "saesteer train " + " ".join(shlex.quote(a) for a in argv)
    train_sae(source, cfg, args.out, resume=not args.no_resume, max_steps=args.max_steps, evaluate=evaluate,
              command=command, progress=not args.no_progress)
    if not distributed.is_main():
        return 0
    card = json.loads((Path(args.out) / "training_card.json").read_text())
    keys = ("tokens_seen", "l0", "fvu", "dead_fraction", "ce_loss_recovered", "tokens_per_s")
    print(json.dumps({k: card.get(k) for k in keys}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(train_main())
