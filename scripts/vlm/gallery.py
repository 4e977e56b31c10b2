"""The demo's gallery: Tux Paint stamps shipped beside the tiny LLaVA so its Vision tab (and tests) have
real pictures to steer with no download: every held-out stamp of a kind (never seen by the tower or the
projector) and the first ``PER_KIND`` training stamps of each kind, as the model sees them (224 px,
composited on white), PNG. ``gallery.json`` lists file, kind, own name and split of each.
Licence: GPL-2 (Tux Paint stamps), the copyright file is copied beside them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

PER_KIND = 4


def write_gallery(work: Path, out: Path) -> int:
    """Write ``out/gallery/`` and return the number of images. Cost: a PNG encode per image."""
    from PIL import Image

    from saesteer.embedded.vlm import image_tensor

    from .stages import vqa_sets
    from .views import to_uint8

    train, held = vqa_sets(work)
    train = sorted(train, key=lambda t: hashlib.sha1(t[0].id.encode()).hexdigest())
    picked, per = [], {}
    for r, kind, im in train:
        if per.get(kind, 0) < PER_KIND:
            per[kind] = per.get(kind, 0) + 1
            picked.append((r, kind, im, "train"))
    picked += [(r, kind, im, "heldout") for r, kind, im in held]
    folder = out / "gallery"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rows = []
    for r, kind, im, split in sorted(picked, key=lambda t: (t[1], t[0].id)):
        name = r.id.removeprefix("tuxpaint/").replace("/", "-") + ".png"  # stamp names repeat across folders
        Image.fromarray(to_uint8(image_tensor(im)).numpy()).save(folder / name, optimize=True)
        rows.append({"file": name, "kind": kind, "name": r.label, "split": split, "source": r.id})
    (folder / "gallery.json").write_text(json.dumps(rows, indent=0))
    lic = work / "data" / "licenses" / "tuxpaint-stamps-default.copyright.txt"
    if lic.is_file():
        shutil.copy2(lic, folder / "COPYRIGHT-tuxpaint-stamps.txt")
    return len(rows)
