"""The offline builder behind ``scripts/build_vlm.py``: a tiny LLaVA from real parts.

    sources       fetch the image packages (apt-get / pip download), decode their images, record licences,
                  assign splits: ``data/manifest.json`` + ``data/images/*.png``
    stamp_labels  one-word answers for Tux Paint stamps, from their captions
    views         random training views of an image (compositing, crops, flips, rotation, colour jitter)
    teacher       EfficientNet-Lite0 (PyPI wheels, read without installing) and its targets on views
    tower         the CLIP-architecture student tower distilled from the teacher, and its held-out figures
    projector     LLaVA assembly for training, projector training, one-word answer accuracy
    classes       the kinds of object the LLaVA is asked about, and which answers count
    vision_sae    the SAE on the layer the LLaVA reads, its labels and MS;  steer: the steering figures
"""

from __future__ import annotations

import sys
from pathlib import Path


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


#: stages this run found already built (their recorded build times are kept, not overwritten by ~0 s)
SKIPPED: set[str] = set()


def already_built(stage: str, marker: Path, force: bool) -> bool:
    """True (and says so) when ``marker``, the file a stage writes last, exists and ``--force`` is off."""
    if marker.is_file() and not force:
        log(f"[{stage}] done at {marker.parent}")
        SKIPPED.add(stage)
        return True
    return False
