"""The tiny-LLaVA builder's offline recipe (scripts/vlm): one-word answers from stamp captions, the
held-out split, answer matching and the training views. No network, no apt, no pip, no model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # the builder's `vlm` package

from vlm.sources import ImageRecord, assign_splits, split_summary  # noqa: E402
from vlm.stamp_labels import accepted_answers, caption_head_noun, normalise_answer, one_word_label  # noqa: E402
from vlm.views import SIZE, heavy_view, mild_view  # noqa: E402


@pytest.mark.parametrize("caption, word", [
    ("A great blue heron.", "heron"),
    ("A \u201cFuji\u201d apple.", "apple"),
    ("A pair of closed scissors.", "scissors"),
    ("A glass of water.", "glass"),
    ("A spider dancing with a fly.", "spider"),
    ("An albino peahen (a female peafowl, or peacock).", "peahen"),
    ("Mercury\u2014the planet closest to the Sun.", "mercury"),
    ("Big fireworks.", "fireworks"),
    ("", ""),
])
def test_caption_head_noun(caption: str, word: str) -> None:
    assert caption_head_noun(caption) == word


def test_one_word_label_overrides_merges_and_exclusions() -> None:
    assert one_word_label("seasonal/easter/bunny", "A floppy-eared bunny.") == "rabbit"          # merged
    assert one_word_label("animals/mammals/aquatic/sea_lion", "A sea lion.") == "seal"           # override
    assert one_word_label("symbols/alphabets/english/filled/uppercase/A_filled", "A") is None    # letters
    assert one_word_label("symbols/money/00_symbols/euro_1_euro", "Euro sign.") is None
    assert one_word_label("military/final-roll-call", "We remember those who have died.") is None
    assert one_word_label("x/y", "Fire! Fire!") == "fire"
    assert one_word_label("x/z", "\u2013 Because") is None                                       # no word


def test_answers_match_plurals_synonyms_and_articles() -> None:
    assert normalise_answer(" The Cat.") == "cat"
    assert normalise_answer("An apple!") == "apple"
    assert normalise_answer("...") == ""
    ok = accepted_answers("rabbit")
    assert {"rabbit", "rabbits", "bunny"} <= ok
    assert "hare" in ok and "cat" not in ok


def _rec(rid: str, label: str | None, group: str | None = None, source: str = "tuxpaint") -> ImageRecord:
    return ImageRecord(rid, source, rid + ".png", group or rid, "", label, source == "tuxpaint")


def test_split_holds_out_one_group_per_shared_answer_and_keeps_groups_together() -> None:
    """One stamp group per shared answer is held out; mirrors and copies follow their group; photos train."""
    recs = [_rec("t/apple1", "apple"), _rec("t/apple2", "apple"), _rec("t/apple2_mirror", "apple", "t/apple2"),
            _rec("t/apple3", "apple"), _rec("t/owl", "owl"), _rec("t/A", None),
            _rec("p/apple", "apple", source="opencv")]
    assign_splits(recs)
    held = {r.group for r in recs if r.vqa_split == "heldout"}
    assert len(held) == 1 and held <= {"t/apple1", "t/apple2", "t/apple3"}       # one apple stamp group
    by_group = {}
    for r in recs:
        by_group.setdefault(r.group, set()).add(r.vqa_split)
    assert all(len(v) == 1 for v in by_group.values())                          # mirrors follow originals
    assert next(r for r in recs if r.id == "t/owl").vqa_split is None           # an answer no other stamp has
    assert next(r for r in recs if r.id == "p/apple").vqa_split == "train"      # photos always train
    assert next(r for r in recs if r.id == "t/A").vqa_split is None
    assert all(r.tower_split == "heldout" for r in recs if r.vqa_split == "heldout")
    shuffled = [_rec(r.id, r.label, r.group, r.source) for r in reversed(recs)]
    assign_splits(shuffled)
    assert {r.id for r in shuffled if r.vqa_split == "heldout"} == {r.id for r in recs if r.vqa_split == "heldout"}
    s = split_summary(recs)
    assert s["vqa_heldout_answers"] == 1 and s["images"] == len(recs)


def test_views_are_seeded_canvas_sized_and_in_range() -> None:
    stamp = torch.zeros(4, 50, 30)
    stamp[0, 10:40, 5:25] = 1.0   # a red, opaque block in a transparent stamp
    stamp[3, 10:40, 5:25] = 1.0
    photo = torch.rand(3, 60, 90, generator=torch.Generator().manual_seed(0))
    for make in (lambda x, g: heavy_view(x, g, [photo], [stamp]), mild_view):
        for x in (stamp, photo):
            a = make(x, torch.Generator().manual_seed(7))
            b = make(x, torch.Generator().manual_seed(7))
            c = make(x, torch.Generator().manual_seed(8))
            assert a.shape == (3, SIZE, SIZE)
            assert torch.equal(a, b) and not torch.equal(a, c)
            assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_stamp_kinds_come_from_folders_and_skip_unasked_stamps() -> None:
    from vlm.classes import KINDS, accepted, stamp_kind

    assert stamp_kind("tuxpaint/animals/birds/heron") == "bird"
    assert stamp_kind("tuxpaint/animals/mammals/cats/cat") == "animal"
    assert stamp_kind("tuxpaint/vehicles/auto/beetle") == "vehicle"
    assert stamp_kind("tuxpaint/symbols/money/00_symbols/euro") is None     # sub-folder listed before its parent
    assert stamp_kind("tuxpaint/symbols/money/coin_1") == "coin"
    assert stamp_kind("tuxpaint/symbols/alphabets/A") is None
    assert stamp_kind("tuxpaint/animals/birdsong") is None                   # a prefix must end at a folder
    assert stamp_kind("opencv/fruits") is None                               # photos are never asked about
    assert len(KINDS) == len(set(KINDS)) >= 15
    ok = accepted("vehicle", "tractor")
    assert {"vehicle", "vehicles", "car", "tractor", "tractors"} <= ok and "bird" not in ok


def test_hook_of_the_layer_llava_reads() -> None:
    from vlm.vision_sae import hook_name

    assert hook_name(4, -2) == "vision.blocks.2.hook_resid_post"   # hidden_states[-2] of 4 layers
    assert hook_name(4, -1) == "vision.blocks.3.hook_resid_post"
    assert hook_name(24, -2) == "vision.blocks.22.hook_resid_post"  # LLaVA-1.5's CLIP ViT-L


def test_feature_labels_vote_over_top_images() -> None:
    from vlm.vision_sae import TOP, label_features

    kinds = ["bird"] * 8 + ["fish"] * 8
    acts = torch.zeros(16, 3)
    acts[:8, 0] = torch.arange(1, 9).float()      # feature 0: only birds fire
    acts[:, 1] = torch.arange(16).float()         # feature 1: fires on everything, fish highest
    labels = label_features(acts, kinds, [None] * 16)
    assert labels[0]["label"] == "bird" and labels[0]["purity"] == 1.0 and sum(labels[0]["votes"].values()) == 8
    top = sorted(range(16), key=lambda i: -acts[i, 1])[:TOP]
    assert labels[1]["label"] == "fish" and labels[1]["purity"] == round(sum(kinds[i] == "fish" for i in top) / TOP, 3)
    assert labels[2]["label"] == "" and labels[2]["fires_on"] == 0.0     # a dead feature has no label
    assert labels[0]["max_activation"] == 8.0


def test_steering_candidates_are_clear_features_of_asked_kinds_clearest_first() -> None:
    from vlm.steer import MIN_PURITY, candidates

    def rec(f, label, purity, n=10, ms=0.5):
        return {"feature": f, "label": label, "purity": purity, "votes": {label: n}, "ms": ms}

    labels = [rec(0, "bird", 0.9), rec(1, "bird", 1.0), rec(2, "fish", MIN_PURITY - 0.05), rec(3, "fish", 1.0, n=3),
              rec(4, "tree", 0.85, ms=0.9), rec(5, "tree", 0.85, ms=0.2), rec(6, "letter", 1.0)]
    chosen = [r["feature"] for r in candidates(labels, {"bird", "fish", "tree"})]
    assert chosen == [1, 0, 4, 5]                 # purity first, then MS (4 before 5)
    assert 2 not in chosen and 3 not in chosen    # too impure / too few votes
    assert 6 not in chosen                        # not a kind the model is asked about


def test_screening_keeps_features_that_moved_training_answers_best_first() -> None:
    from vlm.steer import MAX_FEATURES, SCREEN_MIN, keep_screened

    def rec(f, moved, purity=0.9):
        return {"feature": f, "purity": purity, "screen": {"to_label": moved, "alpha": 10.0}}

    kept = [r["feature"] for r in keep_screened([rec(0, SCREEN_MIN - 0.01), rec(1, 0.5), rec(2, 0.9),
                                                 rec(3, 0.5, purity=1.0), rec(4, SCREEN_MIN)])]
    assert kept == [2, 3, 1, 4]                   # most moved first, purity breaks ties; 0 is dropped
    many = keep_screened([rec(f, 0.5) for f in range(MAX_FEATURES + 5)])
    assert len(many) == MAX_FEATURES


def test_projector_view_batches_are_seeded_epochs_of_every_image() -> None:
    from vlm.projector import view_batches

    stamp = torch.zeros(4, 20, 20)
    stamp[:, 5:15, 5:15] = 1.0
    images = [stamp * (0.5 + 0.1 * i) for i in range(5)]
    a = list(view_batches(images, 2, 5, seed=3))
    b = list(view_batches(images, 2, 5, seed=3))
    flat = [i for idx, _ in a for i in idx]
    assert len(a) == 5 and all(len(idx) == 2 for idx, _ in a)
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))   # whole epochs
    assert all(v.shape == (3, SIZE, SIZE) for _, views in a for v in views)
    assert all(x == y and all(torch.equal(p, q) for p, q in zip(u, w)) for (x, u), (y, w) in zip(a, b))


def test_a_stage_already_built_is_skipped_and_marked(tmp_path) -> None:
    import vlm

    marker = tmp_path / "card.json"
    assert vlm.already_built("demo-stage", marker, force=False) is False and "demo-stage" not in vlm.SKIPPED
    marker.write_text("{}")
    assert vlm.already_built("demo-stage", marker, force=True) is False          # --force redoes it
    assert vlm.already_built("demo-stage", marker, force=False) is True and "demo-stage" in vlm.SKIPPED
