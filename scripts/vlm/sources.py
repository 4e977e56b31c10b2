"""The images: Tux Paint stamps (Debian ``tuxpaint-stamps-default``), OpenCV's sample images (Debian
``opencv-doc``), scikit-image's bundled images (PyPI ``scikit-image``, read from the wheel without
installing it) and, for the tower only, public-domain clip art (Debian ``openclipart-png``: object
categories only, at most ``CLIPART_PER_FOLDER`` per folder), decoded once into ``data/images/*.png`` with a ``data/manifest.json`` that records every
image's source, caption, one-word answer and split, and every package's licence.

Splits (decided by names and hashes only, so they never depend on the order of the files):

* VQA: Tux Paint stamps whose answer (``stamp_labels``) two or more distinct stamps share; for each such
  answer the stamp whose group name has the smallest sha1 is held out, the others train (a group is a
  stamp with its ``_mirror`` twin and any byte-identical copies). A stamp whose answer no other stamp
  shares is not a VQA image (nothing to learn it from and nothing to test it on); the labelled photos
  are always training images.
* tower: every held-out VQA stamp is held out of the tower's training too, and so is every stamp or
  photo whose group hashes into the lowest ``TOWER_HELDOUT`` fraction (clip art always trains).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from corpus.fetch import decode, deb_version, fetch_deb, fetch_pypi, iter_archive_files, iter_deb_files

from . import log
from .stamp_labels import one_word_label

SCIKIT_IMAGE_VERSION = "0.26.0"
STAMPS = "usr/share/tuxpaint/stamps/"
OPENCV_EXAMPLES = "usr/share/doc/opencv-doc/examples/"
TOWER_HELDOUT = 0.08
CLIPART = "usr/share/openclipart/png/"
CLIPART_PER_FOLDER = 40
#: clip-art folders that hold icons, symbols, patterns or cards rather than pictures of objects
_CLIPART_SKIP = re.compile(r"^(computer/(icons|buttons)|shapes|special|logos|signs_and_symbols/(led|map_symbols|flags/.+)"
                           r"|transportation/aiga-symbols|recreation/games/cards|unsorted/duplicates)(/|$)")
STAMP_MAX_SIDE = 256   # stamps are stored at most this large (median size ~130 px)
PHOTO_MAX_SIDE = 384

#: labelled photos (answers for VQA training; licences as their packages state them)
PHOTO_LABELS = {
    "skimage/chelsea": "cat", "skimage/coffee": "coffee", "skimage/astronaut": "astronaut",
    "skimage/rocket": "rocket", "skimage/horse": "horse", "skimage/motorcycle_left": "motorcycle",
    "opencv/data/apple": "apple", "opencv/data/orange": "orange", "opencv/data/butterfly": "butterfly",
    "opencv/data/baboon": "baboon", "opencv/data/squirrel_cls": "squirrel", "opencv/data/HappyFish": "fish",
    "opencv/data/fruits": "fruit", "opencv/data/starry_night": "painting",
}
#: near-copies that would only repeat another image (stereo/calibration pairs, masks)
_OPENCV_SKIP = re.compile(r"(^|/)(left|right)\d*\.jpg$|_mask\.png$|(^|/)(aloeGT|mask|gradient|tmpl|templ)\.png$"
                          r"|motorcycle_right|plant_result|trimaps/|fuzzy/mask")


@dataclass
class ImageRecord:
    id: str                    # "tuxpaint/animals/birds/crow", "skimage/chelsea", "opencv/data/orange"
    source: str                # tuxpaint | opencv | skimage
    file: str                  # under data/images/
    group: str                 # images in one group are one object (mirrors, identical copies)
    caption: str               # the English caption ('' for photos)
    label: str | None          # the one-word answer, or None (tower-only image)
    alpha: bool                # has a transparency mask (a stamp to composite)
    vqa_split: str | None = None    # train | heldout | None
    tower_split: str = "train"      # train | heldout


def _sha(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def _save_png(data: bytes, dest: Path, max_side: int) -> bool:
    """Decode ``data``, shrink to ``max_side``, save as RGBA (if it has transparency) or RGB PNG."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    im = im.convert("RGBA" if alpha else "RGB")
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.save(dest)
    return alpha


def _licence_file(out: Path, name: str, text: str) -> str:
    (out / "licenses").mkdir(parents=True, exist_ok=True)
    (out / "licenses" / name).write_text(text, encoding="utf-8")
    return f"licenses/{name}"


def tuxpaint_images(cache: Path, out: Path) -> tuple[list[ImageRecord], dict]:
    deb = fetch_deb(["tuxpaint-stamps-default"], cache)
    files: dict[str, bytes] = {}
    copyright_text = ""
    for name, data in iter_deb_files(deb, lambda f: f.startswith(STAMPS) and f.endswith((".png", ".txt"))
                                     or f == "usr/share/doc/tuxpaint-stamps-default/copyright"):
        if name.endswith("copyright"):
            copyright_text = decode(data)
        else:
            files[name[len(STAMPS):]] = data
    records, first_of_hash = [], {}
    for rel in sorted(f for f in files if f.endswith(".png")):
        stem = rel[: -len(".png")]
        txt = files.get(stem + ".txt") or files.get(stem.replace("_mirror", "") + ".txt") or b""
        caption = decode(txt).splitlines()[0].strip() if txt else ""
        digest = hashlib.sha1(files[rel]).hexdigest()
        group = first_of_hash.setdefault(digest, stem.replace("_mirror", ""))
        dest = f"tuxpaint/{stem}.png"
        alpha = _save_png(files[rel], out / "images" / dest, STAMP_MAX_SIDE)
        records.append(ImageRecord(f"tuxpaint/{stem}", "tuxpaint", dest, f"tuxpaint/{group}", caption,
                                   one_word_label(stem, caption), alpha))
    meta = {"packages": [{"origin": "debian", "name": "tuxpaint-stamps-default", "version": deb_version(deb),
                          "file": deb.name}],
            "licence": "GPL-2 (Tux Paint stamps, Bill Kendrick and contributors)",
            "licence_files": [_licence_file(out, "tuxpaint-stamps-default.copyright.txt", copyright_text)]}
    return records, meta


def opencv_images(cache: Path, out: Path) -> tuple[list[ImageRecord], dict]:
    deb = fetch_deb(["opencv-doc"], cache)
    records, copyright_text = [], ""
    for name, data in iter_deb_files(deb, lambda f: f == "usr/share/doc/opencv-doc/copyright" or (
            f.startswith(OPENCV_EXAMPLES) and f.lower().endswith((".jpg", ".png")))):
        if name.endswith("copyright"):
            copyright_text = decode(data)
            continue
        rel = name[len(OPENCV_EXAMPLES):]
        if _OPENCV_SKIP.search(rel):
            continue
        stem = rel.rsplit(".", 1)[0]
        dest = f"opencv/{stem}.png"
        alpha = _save_png(data, out / "images" / dest, PHOTO_MAX_SIDE)
        rid = f"opencv/{stem}"
        records.append(ImageRecord(rid, "opencv", dest, rid, "", PHOTO_LABELS.get(rid), alpha))
    meta = {"packages": [{"origin": "debian", "name": "opencv-doc", "version": deb_version(deb), "file": deb.name}],
            "licence": "Apache-2.0 AND BSD-3-Clause (OpenCV sample data)",
            "licence_files": [_licence_file(out, "opencv-doc.copyright.txt", copyright_text)]}
    return records, meta


def skimage_images(cache: Path, out: Path) -> tuple[list[ImageRecord], dict]:
    whl = fetch_pypi("scikit-image", SCIKIT_IMAGE_VERSION, cache)
    records, lic, fetchers = [], "", ""
    for name, data in iter_archive_files(whl, lambda f: f.startswith("skimage/data/") and f.endswith(
            (".png", ".jpg", "_fetchers.py")) or f.endswith(("LICENSE.txt", "/LICENSE"))):
        if name.endswith(("LICENSE.txt", "LICENSE")):
            lic = decode(data)
        elif name.endswith("_fetchers.py"):
            fetchers = decode(data)
        else:
            stem = name[len("skimage/data/"):].rsplit(".", 1)[0]
            if _OPENCV_SKIP.search(stem):
                continue
            dest = f"skimage/{stem}.png"
            alpha = _save_png(data, out / "images" / dest, PHOTO_MAX_SIDE)
            rid = f"skimage/{stem}"
            records.append(ImageRecord(rid, "skimage", dest, rid, "", PHOTO_LABELS.get(rid), alpha))
    # each image's own licence is stated in the docstring of its loader in skimage/data/_fetchers.py
    notes = "\n\n".join(f"def {m.group(1)}():\n{m.group(2).strip()}" for m in
                        re.finditer(r'^def (\w+)\(\):\s*"""(.*?)"""', fetchers, re.S | re.M))
    meta = {"packages": [{"origin": "pypi", "name": "scikit-image", "version": SCIKIT_IMAGE_VERSION, "file": whl.name}],
            "licence": "BSD-3-Clause (package); images public domain or CC0 as each loader's docstring states",
            "licence_files": [_licence_file(out, "scikit-image.LICENSE.txt", lic),
                              _licence_file(out, "scikit-image.image-notes.txt", notes)]}
    return records, meta


def openclipart_images(cache: Path, out: Path) -> tuple[list[ImageRecord], dict]:
    """Clip art of objects for the tower's training only (no answers): the folders ``_CLIPART_SKIP`` does
    not exclude, at most ``CLIPART_PER_FOLDER`` images each (the smallest sha1 of their names)."""
    deb = fetch_deb(["openclipart-png"], cache)
    names = [n for n, _ in iter_deb_files(deb, lambda f: f.startswith(CLIPART) and f.endswith(".png"))]
    by_folder: dict[str, list[str]] = {}
    for n in names:
        folder = n[len(CLIPART):].rsplit("/", 1)[0]
        if not _CLIPART_SKIP.search(folder):
            by_folder.setdefault(folder, []).append(n)
    keep = {n for group in by_folder.values() for n in sorted(group, key=_sha)[:CLIPART_PER_FOLDER]}
    records, copyright_text = [], ""
    for name, data in iter_deb_files(deb, lambda f: f in keep or f == "usr/share/doc/openclipart-png/copyright"):
        if name.endswith("copyright"):
            copyright_text = decode(data)
            continue
        stem = name[len(CLIPART):-len(".png")]
        dest = f"openclipart/{stem}.png"
        try:
            alpha = _save_png(data, out / "images" / dest, STAMP_MAX_SIDE)
        except Exception as exc:  # a few files in the archive may not decode: skip them, say so
            log(f"  skipped openclipart/{stem}: {exc}")
            continue
        records.append(ImageRecord(f"openclipart/{stem}", "openclipart", dest, f"openclipart/{stem}", "", None, alpha))
    meta = {"packages": [{"origin": "debian", "name": "openclipart-png", "version": deb_version(deb), "file": deb.name}],
            "licence": "public domain (Open Clip Art Library dedication)",
            "licence_files": [_licence_file(out, "openclipart-png.copyright.txt", copyright_text)],
            "selection": f"folders not matching {_CLIPART_SKIP.pattern!r}, <= {CLIPART_PER_FOLDER} per folder"}
    return records, meta


def assign_splits(records: list[ImageRecord]) -> None:
    """Set ``vqa_split`` and ``tower_split`` in place (the rules are in the module docstring)."""
    groups_of: dict[str, set[str]] = {}
    for r in records:
        if r.source == "tuxpaint" and r.label:
            groups_of.setdefault(r.label, set()).add(r.group)
    held = {min(gs, key=_sha) for gs in groups_of.values() if len(gs) >= 2}
    for r in records:
        if r.label and r.group in held:
            r.vqa_split = "heldout"
        elif r.label and (r.source != "tuxpaint" or len(groups_of[r.label]) >= 2):
            r.vqa_split = "train"
        if r.group in held or (r.source != "openclipart" and _sha("tower:" + r.group) < TOWER_HELDOUT * 2**64):
            r.tower_split = "heldout"


def build_data(cache: Path, out: Path) -> dict:
    """Fetch, decode and split every image into ``out`` (``images/``, ``licenses/``, ``manifest.json``).
    Cost: ~390 MB of downloads once (cached in ``cache``), then ~2 min to decode."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    records, sources = [], {}
    for name, fn in (("tuxpaint", tuxpaint_images), ("opencv", opencv_images), ("skimage", skimage_images),
                     ("openclipart", openclipart_images)):
        log(f"[data] {name} ...")
        recs, meta = fn(cache, out)
        records += recs
        sources[name] = {**meta, "images": len(recs), "labelled": sum(r.label is not None for r in recs)}
    assign_splits(records)
    manifest = {"builder": "scripts/build_vlm.py --stages data", "sources": sources,
                "vqa_rule": "Tux Paint stamps whose answer >= 2 distinct stamps share: one stamp per answer held out "
                            "(smallest sha1 of the group name), the rest train; labelled photos always train",
                "tower_heldout_fraction": TOWER_HELDOUT,
                "images": [asdict(r) for r in records]}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out / "manifest.json")
    return manifest


def load_manifest(data: Path) -> list[ImageRecord]:
    """The image records of a built ``data`` folder."""
    m = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    return [ImageRecord(**r) for r in m["images"]]


def split_summary(records: list[ImageRecord]) -> dict:
    """Counts for the training card: images per split, answers (classes) per VQA split."""
    vtrain = [r for r in records if r.vqa_split == "train"]
    vheld = [r for r in records if r.vqa_split == "heldout"]
    return {"images": len(records), "tower_train": sum(r.tower_split == "train" for r in records),
            "tower_heldout": sum(r.tower_split == "heldout" for r in records),
            "vqa_train_images": len(vtrain), "vqa_train_answers": len({r.label for r in vtrain}),
            "vqa_heldout_images": len(vheld), "vqa_heldout_answers": len({r.label for r in vheld})}
