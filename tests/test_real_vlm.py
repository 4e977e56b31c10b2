"""The shipped tiny LLaVA (saesteer.embedded.vlm): assembled from the asset files plus the installed
SmolLM2-135M-Instruct, without retraining. Shapes, that the language model *is* SmolLM2, that the tower
and projector are the files' tensors, that generation works and answers two training images."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from saesteer.embedded import smollm2 as smollm2_mod  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from saesteer.embedded.vlm import (QUESTION, answer, load_tiny_llava, tiny_llava_gallery,  # noqa: E402
                                  tiny_llava_path)
from saesteer.errors import SaesteerError  # noqa: E402

try:
    smollm2_mod._gguf_folder()
except smollm2_mod.EmbeddedModelMissingError as exc:  # pragma: no cover - depends on the env
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(scope="module")
def loaded():
    return load_tiny_llava()


def _builder_on_path() -> None:
    """scripts/ (the builder's `vlm` package: answer matching) importable, as tests/test_vlm_build.py does."""
    path = str(Path(__file__).resolve().parents[1] / "scripts")
    if path not in sys.path:
        sys.path.insert(0, path)


def _example(k: int = 0):
    """The k-th held-out gallery stamp (PIL, RGB): never seen in training."""
    Image = pytest.importorskip("PIL.Image")
    held = [g for g in tiny_llava_gallery() if g["split"] == "heldout"]
    with Image.open(held[k]["path"]) as im:
        return im.convert("RGB")


@pytest.mark.real
def test_assembly_is_a_llava_with_the_configured_shapes(loaded) -> None:
    from transformers import CLIPVisionModel, LlavaForConditionalGeneration

    model, proc = loaded
    assert isinstance(model, LlavaForConditionalGeneration)
    assert isinstance(model.model.vision_tower, CLIPVisionModel)
    assert not model.training
    vc = model.config.vision_config
    grid = vc.image_size // vc.patch_size
    assert proc.num_image_tokens == grid * grid
    inputs = proc([_example(0)])
    assert inputs["pixel_values"].shape == (1, 3, vc.image_size, vc.image_size)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == grid * grid
    assert inputs["attention_mask"].shape == inputs["input_ids"].shape
    with torch.no_grad():
        feats = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert len(feats) == 1
    assert feats[0].shape == (grid * grid, model.config.text_config.hidden_size)


@pytest.mark.real
def test_language_model_weights_are_smollm2s(loaded) -> None:
    model, _ = loaded
    ref, _ = smollm2_mod.load_smollm2()
    ours = model.model.language_model.state_dict()
    theirs = ref.model.state_dict()
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k
    assert torch.equal(model.lm_head.weight, ref.lm_head.weight)
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()  # tied


@pytest.mark.real
def test_tower_and_projector_are_the_files_tensors(loaded) -> None:
    from safetensors.torch import load_file

    model, _ = loaded
    for file, module in (("tower.safetensors", model.model.vision_tower),
                         ("projector.safetensors", model.model.multi_modal_projector)):
        stored = load_file(tiny_llava_path() / file)
        state = module.state_dict()
        assert stored.keys() == state.keys(), file
        for k, v in stored.items():
            assert torch.equal(state[k], v.float()), (file, k)


@pytest.mark.real
def test_held_out_answers_reproduce_the_card_and_beat_the_baseline() -> None:
    """The shipped card's held-out accuracy is what the shipped files give (bf16, as the build measured),
    and it is above always answering the most frequent training kind."""
    import json
    import re

    _builder_on_path()
    from vlm.classes import accepted  # noqa: E402

    card = json.loads((tiny_llava_path() / "training_card.json").read_text())["check"]
    model, proc = load_tiny_llava(dtype=torch.bfloat16)
    rows = [g for g in tiny_llava_gallery() if g["split"] == "heldout"]
    Image = pytest.importorskip("PIL.Image")
    images = []
    for g in rows:
        with Image.open(g["path"]) as im:
            images.append(im.convert("RGB"))
    got = []
    for s in range(0, len(images), 32):
        got += answer(model, proc, images[s:s + 32])
    first = [(re.findall(r"[a-z]+", t.lower()) or [""])[0] for t in got]
    acc = sum(w in accepted(g["kind"], g["name"]) for w, g in zip(first, rows)) / len(rows)
    assert len(rows) == card["vqa_heldout"]["images"]
    assert acc == pytest.approx(card["vqa_heldout"]["accuracy"], abs=2 / len(rows))  # bf16 ties may flip one
    assert acc > card["majority_baseline"]["accuracy"] + 0.1


@pytest.mark.real
def test_clamping_a_labelled_feature_reproduces_the_cards_steering() -> None:
    """A feature from the steering figures, clamped on a held-out stamp of another kind through
    saesteer's vision hook, gives the steered answer the build recorded (and not the unsteered one)."""
    import json

    from saesteer.embedded.vlm import load_tiny_llava_steered

    _builder_on_path()
    from vlm.stamp_labels import normalise_answer  # noqa: E402

    steer = json.loads((tiny_llava_path() / "steering.json").read_text())
    steered, proc = load_tiny_llava_steered(dtype=torch.bfloat16)
    assert steered.attachments and next(iter(steered.attachments)) == "vision.blocks.2.hook_resid_post"
    rows = {g["source"]: g for g in tiny_llava_gallery()}
    Image = pytest.importorskip("PIL.Image")
    checked = 0
    for feat in steer["features"]:
        for stamp, before, after in feat["error"]["examples"]:
            if before == after or stamp not in rows:
                continue
            with Image.open(rows[stamp]["path"]) as im:
                inputs = proc([im.convert("RGB")])
            plain = proc.decode(steered.generate(**inputs, max_new_tokens=3, do_sample=False), inputs)[0]
            moved = proc.decode(steered.generate(**inputs, edits={feat["feature"]: feat["value"]}, max_new_tokens=3,
                                                 do_sample=False), inputs)[0]
            assert (normalise_answer(plain), normalise_answer(moved)) == (before, after), (stamp, plain, moved)
            checked += 1
            break
        if checked == 3:
            break
    assert checked == 3


@pytest.mark.real
def test_batched_generation_with_different_questions_matches_single_rows(loaded) -> None:
    model, proc = loaded
    images = [_example(0), _example(1)]
    questions = [QUESTION, "Describe this image."]
    batch = proc(images, question=questions)
    assert batch["attention_mask"][0].sum() != batch["attention_mask"][1].sum()  # rows were left-padded
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
        texts = proc.decode(out, batch)
        for k in range(2):
            one = proc([images[k]], question=questions[k])
            single = proc.decode(model.generate(**one, max_new_tokens=4, do_sample=False), one)
            assert texts[k] == single[0]


@pytest.mark.real
def test_processor_rejects_bad_input_before_running(loaded) -> None:
    _, proc = loaded
    cat = _example(0)
    with pytest.raises(SaesteerError):
        proc([cat, cat], question=[QUESTION])
    with pytest.raises(SaesteerError):
        proc(cat)  # not a list
    with pytest.raises(SaesteerError):
        proc([torch.zeros(5, 8, 8)])
