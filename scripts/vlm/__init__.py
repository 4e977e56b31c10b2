"""The offline builder behind ``scripts/build_vlm.py``: a tiny LLaVA from real parts.

    sources       fetch the image packages (apt-get / pip download), decode their images, record licences,
                  assign splits: ``data/manifest.json`` + ``data/images/*.png``
    stamp_labels  one-word answers for Tux Paint stamps, from their captions
    views         random training views of an image (compositing, crops, flips, rotation, colour jitter)
    teacher       EfficientNet-Lite0 (PyPI wheels, read without installing) and its targets on views
    tower         the CLIP-architecture student tower distilled from the teacher, and its held-out figures
    projector     LLaVA assembly for training, projector training, one-word answer accuracy
"""

from __future__ import annotations

import sys


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
