"""The demo's parts without a browser: limits, batched streaming, the token view, model loading errors,
the reward tab's reweighting arithmetic, and the ``saesteer demo`` options. Tiny random models only."""

from __future__ import annotations

import threading

import pytest
import torch

import saesteer
from saesteer.cli import build_parser
from saesteer.demos.limits import DemoInputError, Limits
from saesteer.demos.models import ModelRegistry, PairKey, key_from_page, load_pair
from saesteer.demos.page_errors import error_html, error_text
from saesteer.demos.streaming import stream_rows
from saesteer.demos.token_view import TokenFeatures, caption, read_token_features, render_tokens
from saesteer.errors import SaesteerError
from tiny import CharTokenizer, random_sae, tiny_lm


class BatchTokenizer(CharTokenizer):
    """CharTokenizer plus what the demo calls: a batch of texts to left-padded tensors."""

    chat_template = None
    pad_token = "<pad>"

    def __call__(self, text, add_special_tokens=False, return_tensors=None, padding=False, **kw):
        if isinstance(text, str):
            return super().__call__(text)
        rows = [super(BatchTokenizer, self).__call__(t)["input_ids"] for t in text]
        n = max(map(len, rows))
        ids = torch.tensor([[0] * (n - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows])
        return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def steered():
    sm = saesteer.wrap(tiny_lm("llama"), random_sae(d_sae=64), layer=1, tokenizer=BatchTokenizer())
    return sm, BatchTokenizer()


def test_limits_refuse_out_of_bounds_input():
    lim = Limits(max_prompt_chars=20, max_new_tokens=16, max_edits=2, max_abs_value=100, max_abs_scale=10)
    assert lim.prompt("  hi  ") == "hi"
    for bad, msg in [("", "the prompt is empty"), ("x" * 21, "the prompt has 21 characters; .* at most 20")]:
        with pytest.raises(DemoInputError, match=msg):
            lim.prompt(bad)
    assert lim.new_tokens("8") == 8
    for bad in (0, 17, "many"):
        with pytest.raises(DemoInputError):
            lim.new_tokens(bad)
    assert lim.edit_row(3, "clamp", 50, d_sae=64) == (3, "clamp", 50.0)
    assert lim.edit_row(3.0, "erase", None, d_sae=64) == (3, "erase", 0.0)
    for row, msg in [((64, "clamp", 1), "does not exist"), ((2.5, "clamp", 1), "whole number"),
                     ((1, "teleport", 1), "one of"), ((1, "clamp", 101), "within"), ((1, "scale", 11), "within"),
                     ((1, "add", float("nan")), "within"), ((None, "clamp", 1), "pick a feature")]:
        with pytest.raises(DemoInputError, match=msg):
            lim.edit_row(*row, d_sae=64)
    edits = lim.edit_list([[1, "clamp", 5.0], [2, "scale", 0.5]], d_sae=64)
    assert edits == [saesteer.Clamp(1, 5.0), saesteer.Scale(2, 0.5)]
    with pytest.raises(DemoInputError, match="at most 2"):
        lim.edit_list([[1, "erase", 0]] * 3, d_sae=64)


def test_stream_rows_streams_each_row_and_ends_with_the_batched_generate(steered):
    """Every update holds one more token per row; the last equals one ``generate(edits=[None, e])``."""
    sm, tok = steered
    edits = [saesteer.Clamp(5, 20.0)]
    updates = list(stream_rows(sm, tok, "hello there", [None, edits], max_new_tokens=6))
    assert [u.new_tokens for u in updates] == [1, 2, 3, 4, 5, 6, 6] and updates[-1].done
    for a, b in zip(updates, updates[1:-1]):
        assert [x[:len(y)] for x, y in zip(b.new_ids, a.new_ids)] == a.new_ids  # rows only grow
    enc = tok(["hello there"] * 2, return_tensors="pt", padding=True)
    out = sm.generate(**enc, edits=[None, edits], max_new_tokens=6, do_sample=False)
    n = enc["input_ids"].shape[1]
    assert updates[-1].new_ids == [out[r, n:].tolist() for r in (0, 1)]
    assert updates[-2].new_ids == updates[-1].new_ids
    assert updates[-1].new_ids[0] != updates[-1].new_ids[1]  # the clamp changed the steered row
    plain = sm.generate(**tok(["hello there"], return_tensors="pt", padding=True), max_new_tokens=6, do_sample=False)
    assert updates[-1].new_ids[0] == plain[0, n:].tolist()


def test_stream_rows_checks_edits_first_and_stops_when_closed(steered):
    sm, tok = steered
    with pytest.raises(saesteer.EditError):
        next(stream_rows(sm, tok, "hi", [None, [saesteer.Clamp(999, 1.0)]], max_new_tokens=4))
    it = stream_rows(sm, tok, "hello", [None, None], max_new_tokens=200)
    first = next(it)
    assert first.new_tokens == 1
    it.close()  # the visitor left: generation stops at its next step and the worker thread ends
    assert not any(t.name == "saesteer-demo-generate" and t.is_alive() for t in threading.enumerate())
    assert not sm._hooks.active


def test_token_view_reads_features_and_escapes_text(steered):
    sm, tok = steered
    last = list(stream_rows(sm, tok, "abc", [None, [saesteer.Clamp(5, 20.0)]], max_new_tokens=4))[-1]
    rows = read_token_features(sm, tok, last.sequences, last.attention_mask, last.prompt_len)
    assert [len(r.tokens) for r in rows] == [4, 4]
    acts = sm.features(input_ids=last.sequences, top_k=64)
    pos = last.prompt_len + 2
    assert rows[1].features[2] == acts.at(1, pos)  # the same numbers as the library's features()
    row = TokenFeatures(["<b>x</b>", "y"], [[(5, 2.0), (7, 1.0)], []])
    page = render_tokens(row, 5, {5: "a & b", 7: "q\"uote"}, scale=2.0)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "a &amp; b" in page
    assert "rgba(255, 140, 0, 1.000)" in page and "rgba(255, 140, 0, 0.000)" in page
    assert "fires on 1 of 2 tokens, peak 2.00" in caption(row, 5, None)
    assert "does not fire" in caption(row, 9, None)
    assert TokenFeatures.from_json(row.to_json()) == row


def test_errors_read_as_one_line_without_a_traceback():
    assert error_text(DemoInputError("too long")) == "too long"
    try:
        {}["missing"]
    except KeyError as e:
        text = error_text(e)
    assert text == "KeyError: 'missing'" and "Traceback" not in text
    assert "&lt;script&gt;" in error_html(SaesteerError("<script>"))
    assert error_html(None) == ""


def test_loading_a_pair_fails_clearly(tmp_path):
    with pytest.raises(SaesteerError, match="no such folder"):
        load_pair(PairKey(str(tmp_path / "missing")), torch.float32)
    with pytest.raises(SaesteerError, match="cannot load model 'nobody/nothing'"):
        load_pair(PairKey("nobody/nothing"), torch.float32)  # HF_HUB_OFFLINE=1 in tests: fails at once
    with pytest.raises(SaesteerError, match="cannot load model"):
        load_pair(PairKey(str(tmp_path)), torch.float32)  # a folder with no model in it
    assert key_from_page(" ", None, "") == PairKey()
    with pytest.raises(SaesteerError, match="one line"):
        key_from_page("a\nb", "", "")
    with pytest.raises(SaesteerError, match="dtype"):
        ModelRegistry(dtype="int8")


def test_registry_keeps_the_default_and_evicts_others(monkeypatch, steered):
    sm, tok = steered
    from saesteer.demos import models

    loads = []

    def fake(key, dtype):
        loads.append(key)
        return models.LoadedPair(key, sm, tok)

    monkeypatch.setattr(models, "load_pair", fake)
    reg = ModelRegistry(PairKey("a"), capacity=1)
    assert reg.get().key == PairKey("a") and reg.get(PairKey("a")).key == PairKey("a")
    reg.get(PairKey("b"))
    reg.get(PairKey("c"))  # evicts b, never the default
    reg.get(PairKey("a"))
    reg.get(PairKey("b"))
    assert loads == [PairKey("a"), PairKey("b"), PairKey("c"), PairKey("b")]


def test_reward_reweighting_matches_the_library():
    """The weight boxes' arithmetic gives ``SARM.reweight(copy=True).score`` without a forward."""
    from saesteer.demos.reward_scores import read_pair, reweighted
    from saesteer.reward import SARM

    sae = random_sae(d_sae=64, architecture="topk", k=8)
    w = torch.randn(64, generator=torch.Generator().manual_seed(5))
    rm = SARM.from_backbone(tiny_lm("llama"), sae, layer=2, tokenizer=CharTokenizer(), weight=w)
    convs = [("why?", "because"), ("why?", "no idea at all")]
    st = read_pair(rm, *convs[0], convs[1][1])
    assert st["rewards"] == pytest.approx(rm.score(convs).tolist(), abs=1e-12)
    i, j = st["deciding"][:2]
    got, _ = reweighted(st, {i: 0.0, j: 1.2345})
    want = rm.reweight({i: 0.0, j: 1.2345}, copy=True).score(convs).tolist()
    assert got == pytest.approx(want, abs=1e-9) and got != pytest.approx(st["rewards"])
    assert float(rm.weight[i]) == float(w[i])  # the shared model was never reweighted


def test_text_refusals_name_their_box():
    """An empty Response A or an over-long Response B is refused naming that box, not "the prompt";
    the Reward tab's prompt may be empty; the other tabs' boxes keep their own names."""
    from saesteer.demos.reward_tab import checked_texts

    lim = Limits(max_prompt_chars=20)
    assert checked_texts(lim, "  ", " yes ", "no") == ("", "yes", "no")
    with pytest.raises(DemoInputError, match="^Response A is empty"):
        checked_texts(lim, "why?", "   ", "no")
    with pytest.raises(DemoInputError, match="^Response B has 25 characters; .* at most 20$"):
        checked_texts(lim, "why?", "yes", "n" * 25)
    with pytest.raises(DemoInputError, match="^the prompt has 21 characters"):
        checked_texts(lim, "p" * 21, "yes", "no")
    with pytest.raises(DemoInputError, match="^the probe is empty"):
        lim.prompt("", "the probe")


def _reward_state() -> dict:
    """A Reward tab state as ``read_pair`` keeps it: features 7 and 3 decide the preference."""
    return {"rewards": [1.0, -2.0], "deciding": [7, 3], "chart": [7, 3, 9],
            "f": {"7": [2.0, 0.0], "3": [0.0, 4.0], "9": [1.0, 1.0]},
            "w": {"7": 0.25, "3": -0.5, "9": 0.1}, "labels": {"7": "joy", "3": "war", "9": "the"}}


def test_typed_weights_take_any_finite_weight_and_skip_empty_boxes():
    """Gradio passes a weight box's content as it is: an empty box (None, blank) and a box at its
    shown starting value keep the weight; 5 (outside the old [-1, 1] slider) is taken; a weight that
    is not a finite number within the bound is a message naming the feature."""
    from saesteer.demos.reward_scores import reweighted, typed_weights

    st = _reward_state()
    assert typed_weights(st, [None, None], 1000) == {}
    assert typed_weights(st, ["", "  "], 1000) == {}
    assert typed_weights(st, [0.25, -0.5], 1000) == {}  # the values the boxes start at
    assert typed_weights(st, [5, None], 1000) == {7: 5.0}
    assert typed_weights(st, [None, "-1000"], 1000) == {3: -1000.0}
    assert reweighted(st, typed_weights(st, [5, None], 1000))[0] == pytest.approx([1.0 + 4.75 * 2, -2.0])
    for bad, msg in [(1000.5, "within"), (float("nan"), "finite"), (float("inf"), "finite"), ("many", "number")]:
        with pytest.raises(DemoInputError, match=f"feature 3 .*{msg}"):
            typed_weights(st, [0.25, bad], 1000)


def test_reward_charts_are_sorted_and_share_one_y_range():
    """Each chart lists its bars largest contribution first; one y range covers both charts."""
    from saesteer.demos.reward_scores import chart_frame, shared_y_range

    st = _reward_state()
    a, b = chart_frame(st, st["w"], 0), chart_frame(st, st["w"], 1)
    assert list(a["contribution"]) == [0.5, pytest.approx(0.1)] and list(a["feature"]) == ["7: joy", "9: the"]
    assert list(b["contribution"]) == [pytest.approx(0.1), -2.0] and list(b["effect"]) == [
        "raises the reward", "lowers the reward"]
    lo, hi = shared_y_range([a, b])
    assert lo < -2.0 and hi > 0.5 and lo >= -2.2 and hi <= 0.7
    assert shared_y_range([chart_frame(None, {}, 0)] * 2) is None  # no bars: the charts scale themselves


def test_demo_command_options():
    a = build_parser().parse_args(["demo"])
    assert (a.host, a.port, a.model, a.sae, a.dtype) == ("127.0.0.1", None, "smollm2", "", "bfloat16")
    a = build_parser().parse_args(["demo", "--host", "0.0.0.0", "--port", "8000", "--sae", "x"])
    assert (a.host, a.port, a.sae) == ("0.0.0.0", 8000, "x")


def test_any_pair_loads_by_path(tmp_path):
    """A model folder (weights + tokenizer) and an SAE folder load as the page's "Model and SAE" box
    loads them; an SAE of the wrong width is refused with the reason."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, **{w: 3 + i for i, w in enumerate("the sea is a calm blue deep".split())}}
    tk = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>").save_pretrained(tmp_path / "lm")
    tiny_lm("llama").save_pretrained(tmp_path / "lm")
    sae = random_sae(d_sae=64)
    sae.cfg.hook_name = "blocks.1.hook_resid_post"
    saesteer.save_sae(sae, tmp_path / "sae")
    pair = load_pair(key_from_page(str(tmp_path / "lm"), str(tmp_path / "sae"), ""), torch.float32)
    assert pair.hook == "blocks.1.hook_resid_post" and pair.sae.d_sae == 64
    last = list(stream_rows(pair.model, pair.tokenizer, "the sea is", [None, [saesteer.Clamp(3, 9.0)]],
                            max_new_tokens=3))[-1]
    assert last.done and last.sequences.shape[0] == 2
    saesteer.save_sae(random_sae(d_in=16, d_sae=8), tmp_path / "narrow")
    with pytest.raises(SaesteerError, match="width"):
        load_pair(PairKey(str(tmp_path / "lm"), str(tmp_path / "narrow"), "blocks.1.hook_resid_post"), torch.float32)
    # an SAE typed with a hook other than the one it was trained at (the bundled SAE at layer 3 wrote
    # "abababab..." and the page still said "labelled"): refused with the reason
    with pytest.raises(SaesteerError, match="trained at blocks.1.hook_resid_post"):
        load_pair(key_from_page(str(tmp_path / "lm"), str(tmp_path / "sae"), "blocks.2.hook_resid_post"), torch.float32)


def test_auto_strength_fills_a_finite_value_and_draws_the_curve(steered):
    """The Steer tab's "Auto strength" button: a small steering sweep of the feature picks a clamp or an
    add whose value is finite and within the page's bounds, and returns the sweep's curve as SVG."""
    import math
    import xml.etree.ElementTree as ET

    from saesteer.demos.auto_strength import auto_strength
    from saesteer.demos.models import LoadedPair

    sm, tok = steered
    pair = LoadedPair(PairKey("tiny"), sm, tok)
    res = auto_strength(pair, 20, True, Limits(), max_new_tokens=4)
    assert res.kind in ("clamp", "add") and math.isfinite(res.value) and abs(res.value) <= Limits().max_abs_value
    svg = res.curve[res.curve.index("<svg"):res.curve.index("</svg>") + len("</svg>")]
    assert len(ET.fromstring(svg).findall("{http://www.w3.org/2000/svg}polyline")) == 2  # clamp and add
    assert Limits().edit_row(20, res.kind, res.value, d_sae=64) == (20, res.kind, res.value)  # Add edit takes it
    with pytest.raises(DemoInputError, match="does not exist"):
        auto_strength(pair, 64, True, Limits())
    with pytest.raises(DemoInputError, match="pick a feature"):
        auto_strength(pair, None, True, Limits())


# ---------------------------------------------------------------------------------------- Vision tab
def _vision_labels() -> dict[int, dict]:
    recs = [(0, "bird", 0.9, 0.5, 2.0, ["heron"]), (1, "fruit", 1.0, 0.2, 3.0, ["apple"]),
            (2, "bird", 0.95, 0.1, 1.5, ["owl"]), (3, "bird", 1.0, 0.9, 0.0, ["dead"]),
            (4, "vehicle", 0.5, None, 1.25, ["birdcar"])]
    out = {f: {"feature": f, "label": lab, "purity": p, "ms": ms, "max_activation": m, "names": names}
           for f, lab, p, ms, m, names in recs}
    out[0]["votes"], out[2]["votes"] = {"bird": 9, "fish": 1}, {"bird": 2}  # 0: 9 of its top 10 are birds
    return out


def test_vision_clamp_factors_come_from_the_builds_steering_screen(tmp_path):
    import json

    from saesteer.demos.vision_model import steering_factors
    from saesteer.embedded.vlm import tiny_llava_path

    assert steering_factors(tmp_path) == {}                     # no steering.json: every feature gets 2x
    (tmp_path / "steering.json").write_text(json.dumps({"features": [{"feature": 7, "alpha": 3.0},
                                                                     {"feature": 9, "alpha": 20}]}))
    assert steering_factors(tmp_path) == {7: 3.0, 9: 20.0}
    shipped = tiny_llava_path(must_exist=False)
    if (shipped / "steering.json").is_file():
        rows = json.loads((shipped / "steering.json").read_text())["features"]
        factors = steering_factors(shipped)
        assert len(factors) == len(rows) >= 10 and all(factors[r["feature"]] == r["alpha"] for r in rows)


def test_vision_label_search_and_default_clamp():
    from saesteer.demos.vision_model import default_clamp, search_features

    labels = _vision_labels()
    # exact label first (most top images of that label first, then purest), then a name match; the dead
    # feature 3 never shows
    assert [r[0] for r in search_features(labels, " Bird ")] == [0, 2, 4]
    assert search_features(labels, "bird")[0][:4] == [0, "bird", 0.9, "9 of 10"]
    assert search_features(labels, "apple")[0][:2] == [1, "fruit"]
    assert [r[0] for r in search_features(labels, "")] == [0, 2, 1, 4]
    assert [r[0] for r in search_features(labels, "3")] == [3] and search_features(labels, "99") == []
    assert search_features(labels, "submarine") == []
    assert default_clamp(labels, 1) == 6.0 and default_clamp(labels, 99) == 0.0
    assert default_clamp(labels, 1, {1: 5.0}) == 15.0 and default_clamp(labels, 2, {1: 5.0}) == default_clamp(labels, 2)
    lim = Limits()
    for bad in ("inf", "nan", "-1e9"):
        with pytest.raises(DemoInputError, match="within"):
            lim.edit_row(1, "clamp", bad, d_sae=5)


def test_vision_heat_overlay_tints_the_firing_patches():
    import numpy as np

    from saesteer.demos.vision_images import heat_colors, heat_overlay

    view = np.full((8, 8, 3), 200, dtype=np.uint8)
    view[..., 0] = 50  # not grey: the overlay shows the image in grey
    amap = torch.zeros(2, 2)
    amap[1, 1] = 4.0
    amap[0, 1] = 1.0
    out = heat_overlay(view, amap, scale=4.0, zoom=3)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8
    grey = out[3:12, 3:12]  # inside patch (0, 0), off the grid lines: plain grey
    assert (grey == grey[0, 0]).all() and len(set(grey[0, 0].tolist())) == 1
    hot, warm = out[18, 18].astype(int), out[6, 18].astype(int)  # full scale vs a quarter of it
    assert hot[0] > hot[2] + 60 and hot[1] > warm[1]
    assert np.allclose(heat_colors(np.array([0.0, 1.0])), [[90, 0, 0], [255, 235, 60]])
    with pytest.raises(DemoInputError, match="scale"):
        heat_overlay(view, amap, scale=float("nan"))
    with pytest.raises(DemoInputError, match="tile"):
        heat_overlay(view, torch.zeros(3, 3), scale=1.0)


def test_vision_upload_checks_and_missing_files(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from saesteer.demos.vision_images import MAX_UPLOAD_PIXELS, checked_upload
    from saesteer.demos.vision_model import missing_vision_files

    with pytest.raises(DemoInputError, match="pick an image"):
        checked_upload(None)
    with pytest.raises(DemoInputError, match="at most"):
        checked_upload(SimpleNamespace(size=(MAX_UPLOAD_PIXELS, 2), mode="RGB"))
    with pytest.raises(DemoInputError, match="x 3"):
        checked_upload(np.zeros((4, 4), dtype=np.uint8))
    ok = np.zeros((4, 5, 4), dtype=np.uint8)
    assert checked_upload(ok) is ok
    assert "gallery/gallery.json" in missing_vision_files(tmp_path)
    for name in ("config.json", "tower.safetensors", "projector.safetensors", "labels.json", "sae/x",
                 "gallery/gallery.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    assert missing_vision_files(tmp_path) is None


class _TinyVisionProcessor:
    """What the Vision tab calls on the tiny LLaVA's processor, for tests/tiny_vision's random LLaVA."""

    object_fraction = 0.86

    def __init__(self) -> None:
        from tiny_vision import IMAGE, IMAGE_TOKEN, N_PATCHES

        self.image_size, self.prompt = IMAGE, [5] + [IMAGE_TOKEN] * N_PATCHES + [6, 7]

    def pixel_values(self, images):
        from saesteer.embedded.vlm import image_tensor

        return torch.stack([image_tensor(im, self.image_size) for im in images])

    def __call__(self, images):
        ids = torch.tensor([self.prompt] * len(images))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": self.pixel_values(images)}

    def decode(self, out, inputs):
        return [" ".join(map(str, row[inputs["input_ids"].shape[1]:].tolist())) for row in out]


def test_vision_answers_strip_and_heat_map_are_the_librarys(tmp_path):
    """One request's two answers are the library's single-image answers without and with the clamp; the
    strip is ``top_images`` of the gallery's max-over-patches activations (read once, then cached); the
    heat map is drawn from ``patch_activation_map``."""
    import numpy as np
    from PIL import Image

    from saesteer.demos.vision_images import gallery_activations
    from saesteer.demos.vision_model import LoadedVision, answer_pair, feature_pictures
    from saesteer.metrics import patch_activation_map, top_images
    from saesteer.metrics.image_activations import image_activations
    from tiny_vision import D_VISION, tiny_llava

    rng = np.random.default_rng(0)
    gallery = []
    for i in range(8):
        path = tmp_path / f"g{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        gallery.append({"path": path, "kind": "kind", "name": f"n{i}", "split": "heldout" if i % 2 else "train"})
    steered = saesteer.wrap(tiny_llava(), random_sae(d_in=D_VISION, d_sae=64))
    proc = _TinyVisionProcessor()
    images = [Image.open(r["path"]).convert("RGB") for r in gallery]
    acts = image_activations(steered, [proc.pixel_values(images)], positions="patches", reduce="max")
    feature = int(((acts > 0).sum(0) * 100 + acts.amax(0)).argmax())  # fires on the most images
    labels = {feature: {"label": "kind", "purity": 1.0, "max_activation": float(acts[:, feature].max())}}
    v = LoadedVision(steered, proc, labels, gallery, ("test", str(tmp_path)))
    # the clamp reaches the answers (how strong a clamp a random tiny model needs to flip a greedy token
    # depends on its random init, which differs between transformers versions)
    for value in (8.0, 32.0, 128.0):
        plain, steer = answer_pair(v, images[1], feature, value)
        if plain != steer:
            break
    assert plain != steer
    one = proc([images[1]])
    gen = dict(max_new_tokens=4, do_sample=False)
    assert plain == proc.decode(steered.generate(**one, **gen), one)[0]
    assert steer == proc.decode(steered.generate(**one, edits={feature: value}, **gen), one)[0]

    strip, overlay, caption, fires = feature_pictures(v, images[1], feature)
    want = top_images(acts, [feature], k=6).of(feature)
    assert fires == int((acts[:, feature] > 0).sum()) and len(strip) == min(6, fires) > 0
    assert [c for _, c in strip] == [f"{val:.2f} | kind: n{i}" + (" (held out)" if i % 2 else "") for i, val in want]
    assert overlay.shape == (2 * proc.image_size, 2 * proc.image_size, 3)
    here = float(patch_activation_map(steered, proc.pixel_values([images[1]]), feature).max())
    assert f"max {here:.2f} here" in caption
    assert gallery_activations(steered, proc, gallery, v.key) is gallery_activations(steered, proc, [], v.key)
