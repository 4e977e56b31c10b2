"""The one-word answers the tiny LLaVA is trained and scored on: 17 kinds of object, each a Tux Paint
stamp folder (``animals/birds`` -> ``bird``), so every kind has several stamps to learn from and to hold
out. A stamp's own name (``stamp_labels.one_word_label``: heron, apple, tractor, ...) also counts as a
correct answer, and so do the synonyms listed here.

Why kinds and not each stamp's own name: 335 names for 613 labelled stamps, most of them once. A held-out
stamp whose name no training stamp has cannot be learned from ~300 pictures, so the fine names made a
task no model could pass (the first build scored 1 % on them, below the most-frequent-answer baseline).

Stamps of no listed folder (letters, symbols, seasonal pictures, ...) still train the tower; they are not
asked about.
"""

from __future__ import annotations

#: stamp folder prefix (under ``stamps/``) -> kind. First match wins, so sub-folders go first.
FOLDERS: tuple[tuple[str, str], ...] = (
    ("animals/birds", "bird"), ("animals/fish", "fish"), ("animals/insects", "insect"),
    ("animals/mammals", "animal"), ("animals/marsupials", "animal"),
    ("food/fruit", "fruit"), ("food/vegetables", "vegetable"),
    ("plants/flowers", "flower"), ("plants/trees", "tree"),
    ("town/houses", "house"), ("town/roadsigns", "sign"),
    ("symbols/money/00_symbols", ""), ("symbols/money", "coin"),
    ("space/planets", "planet"), ("hobbies/music", "instrument"), ("symbols/chess", "chess"),
    ("household/tools", "tool"), ("vehicles", "vehicle"), ("military/vehicles", "vehicle"),
)

#: kind -> other answers that count as correct
SYNONYMS: dict[str, tuple[str, ...]] = {
    "bird": ("birds",), "fish": ("fishes",), "insect": ("bug", "beetle", "spider", "fly", "bee", "ant"),
    "animal": ("mammal", "pet"), "fruit": ("fruits", "berry", "nut"), "vegetable": ("veggie", "vegetables"),
    "flower": ("blossom", "plant"), "tree": ("plant",), "house": ("building", "home", "castle", "tower", "hut"),
    "sign": ("roadsign", "signpost"), "coin": ("money", "currency", "cent", "penny"), "planet": ("globe", "earth"),
    "instrument": ("music", "guitar", "drum", "drums", "piano", "violin", "trumpet", "flute"),
    "chess": ("pawn", "king", "queen", "rook", "knight", "bishop", "piece"),
    "tool": ("hammer", "saw", "wrench", "screwdriver", "drill", "pliers"),
    "vehicle": ("car", "truck", "train", "boat", "ship", "plane", "airplane", "bus", "tractor", "tank",
                "helicopter", "van", "lorry", "locomotive"),
}

KINDS: tuple[str, ...] = tuple(sorted({k for _, k in FOLDERS if k}))


def stamp_kind(record_id: str) -> str | None:
    """The kind of a manifest record (``tuxpaint/<folder>/<stamp>``), or None when it is not asked about."""
    if not record_id.startswith("tuxpaint/"):
        return None
    path = record_id[len("tuxpaint/"):]
    for prefix, kind in FOLDERS:
        if path == prefix or path.startswith(prefix + "/"):
            return kind or None
    return None


def accepted(kind: str, name: str | None = None) -> set[str]:
    """Answers (first word, lower case) that count as correct for a stamp of ``kind`` named ``name``."""
    out = {kind, kind + "s", kind + "es", *SYNONYMS.get(kind, ())}
    if name:
        out |= {name, name + "s", name + "es"}
    return out
