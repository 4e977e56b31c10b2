"""The demo in a real browser: ``saesteer demo`` runs offline in a subprocess, headless Chromium
drives it, and every result on the page is checked against what the library returns for the same
input. Screenshots of each tab are saved (see tests/demo_harness.py)."""

from __future__ import annotations

import pytest
import torch

import saesteer

from demo_harness import browser_missing, chromium, demo_server

pytestmark = pytest.mark.real

NEW_TOKENS = 8  # the app is started with --max-new-tokens 8, so its slider starts (and ends) there
PROMPT = "Tell me about the sea."
CLAMP = 80.0


@pytest.fixture(scope="module")
def library():
    """The model the demo serves by default, loaded here as the library loads it."""
    from saesteer.embedded import load_default

    return load_default(dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def browser(app_url):
    """One headless Chromium for the module; each test opens the page afresh (a new Gradio session)."""
    with chromium() as page:
        yield page


@pytest.fixture(scope="module")
def server():
    why = browser_missing()
    if why:
        pytest.skip(why)
    with demo_server("--max-new-tokens", str(NEW_TOKENS)) as s:
        yield s


@pytest.fixture(scope="module")
def app_url(server, library):
    """The running app's address (the library loads here while the app starts)."""
    return server.wait()


_computed: dict = {}


def library_outputs(library, prompt: str, feature: int) -> tuple[str, str]:
    """(the bare model's greedy continuation, the continuation with ``feature`` clamped to ``CLAMP``)
    as the library gives them (computed once per prompt and feature)."""
    if (prompt, feature) not in _computed:
        sm, tok = library
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        one = tok([text], return_tensors="pt")
        n = one["input_ids"].shape[1]
        if prompt not in _computed:
            plain = sm.generate(**one, max_new_tokens=NEW_TOKENS, do_sample=False)
            _computed[prompt] = tok.decode(plain[0, n:], skip_special_tokens=True).strip()
        two = tok([text, text], return_tensors="pt", padding=True)
        both = sm.generate(**two, edits=[None, [saesteer.Clamp(feature, CLAMP)]], max_new_tokens=NEW_TOKENS,
                           do_sample=False)
        _computed[prompt, feature] = tok.decode(both[1, n:], skip_special_tokens=True).strip()
    return _computed[prompt], _computed[prompt, feature]


def add_edit(page, feature: int, kind: str, value: float) -> None:
    page.type("steer-feature", str(feature))
    page.choose("steer-kind", kind)
    page.type("steer-value", str(value))
    page.click("steer-add")
    page.wait_for(lambda: str(feature) in page.text("steer-edits"), 60, "the edit never reached the edit list")


def generate(page, timeout: float = 300) -> tuple[str, str]:
    page.click("steer-generate")
    page.wait_for(lambda: "done" in page.text("steer-status") or page.error("steer-error"), timeout,
                  "generation never finished")
    assert not page.error("steer-error"), page.error("steer-error")
    return page.value("steer-unsteered"), page.value("steer-steered")


def test_steer_tab_matches_the_library(app_url, library, browser):
    """Search a feature by label, clamp it, generate: the unsteered side is the bare model's greedy
    output, the steered side is the library's steered output and differs from it; the token view
    shows the clamped feature with its label on hover."""
    sm, _ = library
    feature = sm.sae.labels.search("kjv", top=1)[0].feature
    page = browser
    page.open(app_url)
    page.type("steer-search", "kjv")
    page.click("steer-search-btn")
    first = "#steer-results [data-testid='cell-0-0']"
    page.wait_for(lambda: page.driver.find_elements("css selector", first), 60, "no search results")
    page.find(first).click()
    page.wait_for(lambda: page.value("steer-feature") == str(feature), 30, "clicking a match did not pick it")
    page.type("steer-prompt", PROMPT)
    add_edit(page, feature, "clamp", CLAMP)
    plain, steered = generate(page)

    want_plain, want_steered = library_outputs(library, PROMPT, feature)
    assert plain == want_plain
    assert steered == want_steered
    assert steered != plain
    spans = page.driver.find_elements("css selector", "#steer-view-steered span.saesteer-token")
    assert len(spans) > 0
    title = spans[0].get_attribute("title")
    assert f"feature {feature}:" in title and sm.sae.labels[feature][:20] in title
    page.screenshot("steer")


def test_two_sessions_steer_at_once_without_seeing_each_other(app_url, library, browser):
    """Two browsers with different edits press generate together; each gets its own steered text."""
    sm, _ = library
    fa = sm.sae.labels.search("kjv", top=1)[0].feature
    fb = sm.sae.labels.search("python", top=1)[0].feature
    want = {f: library_outputs(library, PROMPT, f) for f in (fa, fb)}
    assert want[fa][1] != want[fb][1], "pick two features that steer this prompt differently"
    a = browser
    with chromium() as b:
        for page, f in ((a, fa), (b, fb)):
            page.open(app_url)
            page.type("steer-prompt", PROMPT)
            add_edit(page, f, "clamp", CLAMP)
        a.click("steer-generate")
        b.click("steer-generate")
        for page, f in ((a, fa), (b, fb)):
            page.wait_for(lambda: "done" in page.text("steer-status") or page.error("steer-error"), 300,
                          "generation never finished")
            assert not page.error("steer-error")
            assert page.value("steer-unsteered") == want[f][0]
            assert page.value("steer-steered") == want[f][1]
            assert page.text("steer-edits").count(str(f)) >= 1
        assert str(fb) not in a.text("steer-edits") and str(fa) not in b.text("steer-edits")


def test_errors_are_messages_in_the_page(app_url, library, browser):
    """Bad input shows a one-line message where the visitor looks, never a stack trace."""
    sm, _ = library
    page = browser
    page.open(app_url)
    page.type("steer-feature", str(sm.sae.d_sae + 5))
    page.click("steer-add")
    page.wait_for(lambda: "does not exist" in page.error("steer-error"), 30, "no error for a bad feature")
    page.type("steer-feature", "3")
    page.choose("steer-kind", "clamp")
    # on a loaded machine the click can reach the server before the value box's change event, or the box
    # can miss the typing: the value shown must be the one the server refuses, so type, check, click, and
    # do it all again (at most three times) when no refusal comes
    for attempt in range(3):
        page.type("steer-value", "1e9")
        try:
            page.wait_for(lambda: float(page.value("steer-value") or 0) == 1e9, 10, "the value box never took 1e9")
            page.click("steer-add")
            page.wait_for(lambda: "within" in page.error("steer-error"), 15, "no error for a huge value")
            break
        except Exception:  # noqa: BLE001 - a timeout: type and click again
            if attempt == 2:
                raise
    page.type("steer-prompt", "   ")
    page.click("steer-generate")
    page.wait_for(lambda: "the prompt is empty" in page.error("steer-error"), 30, "no error for an empty prompt")
    page.expand("Model and SAE")
    page.type("pair-model", "nobody/no-such-model")
    page.click("pair-load")
    page.wait_for(lambda: "cannot load model" in page.error("pair-error"), 120, "no error for a missing model")
    assert "nobody/no-such-model" in page.error("pair-error")
    # the line above the box still names the pair in use, and says the typed one did not load
    assert "smollm2 + the bundled SAE" in page.text("pair-info") and "still in use" in page.text("pair-info")
    html = page.driver.page_source
    assert "Traceback" not in html and 'File "' not in html
    page.screenshot("errors", docs=False)


def token_spans(page) -> int:
    """How many tokens the two token views show."""
    return len(page.driver.find_elements("css selector", "#steer-view-unsteered span.saesteer-token, "
                                                         "#steer-view-steered span.saesteer-token"))


def test_a_failed_steer_request_clears_the_previous_result(app_url, browser):
    """One rule in every tab: a request that fails clears the results it would have replaced. A bad
    feature to highlight: the message is in the error box (not in the token view) and the token views
    are empty; a Generate refused for an empty prompt: both continuations and token views are empty,
    nothing from the earlier Generate is left under "stopped by an error"."""
    page = browser
    page.open(app_url)
    page.type("steer-prompt", PROMPT)
    plain, steered = generate(page)
    assert plain and steered and token_spans(page) > 0
    page.type("steer-highlight", "abc")  # read on blur
    page.wait_for(lambda: "whole number" in page.error("steer-error"), 30, "no error for a bad highlight")
    assert token_spans(page) == 0 and "whole number" not in page.text("steer-view-unsteered")
    page.type("steer-highlight", "")
    page.wait_for(lambda: token_spans(page) > 0 and not page.error("steer-error"), 30,
                  "an empty highlight did not draw the token views again")
    page.type("steer-prompt", "   ")
    page.click("steer-generate")
    page.wait_for(lambda: "the prompt is empty" in page.error("steer-error"), 30, "no error for an empty prompt")
    assert page.text("steer-status") == "stopped by an error"
    assert page.value("steer-unsteered") == "" and page.value("steer-steered") == ""
    assert token_spans(page) == 0


def reward_bars(page, side: str) -> list[tuple[str, float, float, float]]:
    """Chart ``side``'s bars, left to right, as (feature, contribution, x, height in pixels)."""
    return [(bar["feature"], float(bar["contribution"].replace("\u2212", "-")), x, h)
            for bar, x, h in page.bars(f"reward-chart-{side}")]


def score_example(page) -> None:
    """Press Score on the Reward tab and wait for the result (failing on an error message)."""
    page.click("reward-score")
    page.wait_for(lambda: "preferred" in page.text("reward-summary") or page.error("reward-error"), 300,
                  "scoring never finished")
    assert not page.error("reward-error"), page.error("reward-error")


def test_reward_tab_scores_explains_and_reweights(app_url, browser):
    """The page's two rewards are the library's; the top feature of the preference is charted and
    has a slider; moving it to 0 gives the scores of ``rm.reweight({i: 0}, copy=True)``."""
    from saesteer.demos.reward_tab import EXAMPLE
    from saesteer.reward import load_demo

    rm = load_demo()
    prompt, a, b = EXAMPLE
    want = rm.score([(prompt, a), (prompt, b)]).tolist()
    top = rm.explain_preference((prompt, a), (prompt, b), top=1).contributions[0].feature
    want_rw = rm.reweight({top: 0.0}, copy=True).score([(prompt, a), (prompt, b)]).tolist()
    assert want_rw != want
    page = browser
    page.open(app_url)
    page.open_tab("Reward")
    score_example(page)
    got = [float(page.value("reward-a")), float(page.value("reward-b"))]
    assert got == pytest.approx(want, abs=1e-4)

    def bars() -> list[str]:  # the charts draw (asynchronously) one bar per feature, named with its label
        return [f"feature: {bar[0]}" for side in "ab" for bar in reward_bars(page, side)]

    page.wait_for(lambda: any(f"feature: {top}: {rm.labels[top][:10]}" in bar for bar in bars()), 60,
                  "the top feature has no bar with its label")
    page.wait_for(lambda: f"w[{top}]" in page.text("reward-w0"), 30, "the top feature has no weight box")
    page.type("reward-w0", "0")
    page.wait_for(lambda: "before reweighting" in page.text("reward-summary"), 60,
                  "the scores did not follow the weight box")
    got = [float(page.value("reward-a")), float(page.value("reward-b"))]
    assert got == pytest.approx(want_rw, abs=1e-4)
    page.screenshot("reward")


def test_reward_example_is_ranked_as_a_person_would(app_url, browser):
    """The preloaded pair is one the demo reward model gets right: the reply a person prefers (the
    kind one, not the one about war and death) has the higher reward, by a clear margin."""
    from saesteer.demos.reward_tab import EXAMPLE

    page = browser
    page.open(app_url)
    page.open_tab("Reward")
    assert [page.value("reward-prompt"), page.value("reward-a-text"), page.value("reward-b-text")] == list(EXAMPLE)
    grim = [side for side in "ab" if "death" in page.value(f"reward-{side}-text").lower()]
    assert len(grim) == 1, "the example is one kind reply and one about death"
    grim = grim[0]
    kind = "b" if grim == "a" else "a"
    score_example(page)
    assert page.text("reward-summary").startswith(f"{kind.upper()} preferred")
    assert float(page.value(f"reward-{kind}")) > float(page.value(f"reward-{grim}")) + 1.0


def test_reward_charts_are_sorted_on_one_scale(app_url, browser):
    """Each chart draws its bars largest contribution first, and both charts share one y scale: the
    same y axis, and the same pixels per unit of contribution."""
    page = browser
    page.open(app_url)
    page.open_tab("Reward")
    score_example(page)
    page.wait_for(lambda: reward_bars(page, "a") and reward_bars(page, "b"), 60, "the charts never drew")
    per_unit = []
    for side in "ab":
        bars = reward_bars(page, side)
        values = [c for _, c, _, _ in bars]
        assert values == sorted(values, reverse=True), f"chart {side} is not sorted: {values}"
        per_unit.append(sum(h for *_, h in bars) / sum(abs(c) for c in values))
    assert per_unit[0] == pytest.approx(per_unit[1], rel=0.03)
    script = ("return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute('aria-label'))"
              ".filter(t => t.startsWith('Y-axis'))")
    axes = [page.driver.execute_script(script, f"#reward-chart-{side} [aria-roledescription='axis']") for side in "ab"]
    assert axes[0] and axes[0] == axes[1]


def test_reward_weight_boxes_take_an_empty_box_and_any_weight(app_url, server, browser):
    """A weight box takes what a visitor types: 5 (outside the old [-1, 1] slider) gives
    ``rm.reweight({i: 5}, copy=True)``'s scores; an empty box (cleared to type a new number) keeps
    the weight; 5000 (past the bound) is a message in the error box and clears the scores and charts.
    Never one of Gradio's red Error badges, never a traceback in the server log."""
    import re

    from saesteer.demos.reward_tab import EXAMPLE
    from saesteer.reward import load_demo

    rm = load_demo()
    prompt, a, b = EXAMPLE
    convs = [(prompt, a), (prompt, b)]
    want = rm.score(convs).tolist()
    start = len(server.log.read_text())  # the server log so far: other tests' lines are not this test's
    page = browser
    page.open(app_url)
    page.open_tab("Reward")
    score_example(page)
    feature = int(re.match(r"w\[(\d+)\]", page.text("reward-w0").split("\n")[0]).group(1))

    def scores() -> list[float]:
        return [float(page.value("reward-a")), float(page.value("reward-b"))]

    page.type("reward-w0", "5")
    page.wait_for(lambda: "before reweighting" in page.text("reward-summary"), 30, "5 was not taken")
    assert scores() == pytest.approx(rm.reweight({feature: 5.0}, copy=True).score(convs).tolist(), abs=1e-4)
    page.type("reward-w0", "")
    page.wait_for(lambda: "before reweighting" not in page.text("reward-summary"), 30,
                  "an empty box did not go back to the weight it had")
    assert scores() == pytest.approx(want, abs=1e-4) and not page.error("reward-error")
    page.type("reward-w0", "5000")
    page.wait_for(lambda: "within [-1000, 1000]" in page.error("reward-error"), 30, "no message for 5000")
    assert f"feature {feature}" in page.error("reward-error")
    page.wait_for(lambda: not reward_bars(page, "a") and not reward_bars(page, "b"), 30, "the charts stayed")
    assert page.value("reward-a") == "" and page.value("reward-b") == "" and page.text("reward-summary") == ""
    page.type("reward-w0", "0")
    page.wait_for(lambda: not page.error("reward-error") and page.value("reward-a"), 30, "0 was not taken")
    assert scores() == pytest.approx(rm.reweight({feature: 0.0}, copy=True).score(convs).tolist(), abs=1e-4)
    assert page.gradio_errors() == []
    log = server.log.read_text()[start:]
    assert "Traceback" not in log and "Error" not in log, log[-2000:]


def test_reward_errors_name_their_box_and_clear_the_results(app_url, browser):
    """An empty Response A, an over-long Response B: each message names that box (not "the prompt"),
    and the earlier rewards, summary, charts and weight boxes are cleared."""
    page = browser
    page.open(app_url)
    page.open_tab("Reward")
    score_example(page)
    page.wait_for(lambda: reward_bars(page, "a"), 60, "the charts never drew")
    page.type("reward-a-text", "")
    page.click("reward-score")
    page.wait_for(lambda: page.error("reward-error"), 60, "no error for an empty Response A")
    assert "Response A is empty" in page.error("reward-error")
    assert page.value("reward-a") == "" and page.value("reward-b") == "" and page.text("reward-summary") == ""
    page.wait_for(lambda: not reward_bars(page, "a") and not reward_bars(page, "b"), 30, "the charts stayed")
    assert not page.driver.find_elements("css selector", "#reward-w0")  # hidden with the rest
    page.type("reward-a-text", "Thank you, friend!")
    page.set_text("reward-b-text", "b" * 2001)  # past the box's maxlength: what the page's API can send
    page.click("reward-score")
    page.wait_for(lambda: "Response B has 2001 characters" in page.error("reward-error"), 60,
                  "no error for an over-long Response B")
    assert page.gradio_errors() == []


def test_erase_tab_finds_the_library_features_and_probes(app_url, library, browser):
    """The chosen features are ``FeatureEdit.find``'s; the probe's before/after are the library's
    continuations without and with the erasure."""
    from saesteer import FeatureEdit
    from saesteer.demos.erase_tab import (DEFAULT_METHOD, DEFAULT_TOP, EXAMPLE_KEEP, EXAMPLE_PROBE, EXAMPLE_TARGET,
                                          PROBE_TOKENS)

    sm, tok = library
    edit = FeatureEdit.find(sm, target=EXAMPLE_TARGET.splitlines(), contrast=EXAMPLE_KEEP.splitlines(),
                            top=DEFAULT_TOP, method=DEFAULT_METHOD)
    enc = tok([EXAMPLE_PROBE] * 2, return_tensors="pt", padding=True)
    out = sm.generate(**enc, edits=[None, edit], max_new_tokens=PROBE_TOKENS, do_sample=False)
    n = enc["input_ids"].shape[1]
    want = [tok.decode(out[r, n:], skip_special_tokens=True).strip() for r in (0, 1)]
    page = browser
    page.open(app_url)
    page.open_tab("Erase")
    page.click("erase-find")
    page.wait_for(lambda: "reliability" in page.text("erase-summary") or page.error("erase-error"), 300,
                  "finding features never finished")
    assert not page.error("erase-error")
    want_units = [u.feature for u in edit.features][:8]  # the table scrolls: its first rows render

    def shown() -> list[int]:
        cells = page.driver.find_elements("css selector", "#erase-features [data-testid^='cell-'][data-testid$='-0']")
        return [int(c.text) for c in cells if c.text.strip().isdigit()][:8]

    page.wait_for(lambda: len(shown()) == len(want_units), 30, "the chosen features never showed")
    assert shown() == want_units
    page.click("erase-probe")
    page.wait_for(lambda: page.value("erase-after") or page.error("erase-error"), 300, "probing never finished")
    assert not page.error("erase-error")
    assert [page.value("erase-before"), page.value("erase-after")] == want
    page.screenshot("erase")
    # a Find that fails clears what it would have replaced: the features, the facts, the summary, and
    # the probe's before/after (they belonged to the earlier features)
    page.type("erase-keep", "")
    page.click("erase-find")
    page.wait_for(lambda: "knowledge to keep" in page.error("erase-error"), 60, "no error without statements to keep")
    page.wait_for(lambda: not shown(), 30, "the chosen features stayed")
    assert page.text("erase-summary") == "" and [page.value("erase-before"), page.value("erase-after")] == ["", ""]
    assert "euro" not in page.text("erase-facts")


@pytest.fixture(scope="module")
def vision():
    """The tiny LLaVA the Vision tab serves, as the library loads it, with its labels and gallery."""
    from saesteer.demos.vision_model import missing_vision_files

    why = missing_vision_files()
    if why:
        pytest.skip(f"the shipped tiny LLaVA is not in this checkout, so the demo has no Vision tab: {why}")
    from saesteer.embedded.vlm import load_tiny_llava_steered, tiny_llava_gallery, tiny_llava_labels

    steered, proc = load_tiny_llava_steered(dtype=torch.bfloat16)
    return steered, proc, tiny_llava_labels(), tiny_llava_gallery()


def library_answers(vision, images: list, edits=None) -> list[str]:
    """The library's greedy one-word answers (the Vision tab's ANSWER_TOKENS new tokens), one call."""
    from saesteer.demos.vision_model import ANSWER_TOKENS

    steered, proc = vision[:2]
    inputs = proc(images)
    out = steered.generate(**inputs, edits=edits, max_new_tokens=ANSWER_TOKENS, do_sample=False)
    return proc.decode(out, inputs)


def test_vision_tab_matches_the_library(app_url, vision, browser):
    """Search a feature by label and pick it (its clamp value starts at 2x its max activation); pick a
    held-out gallery image whose answer that clamp changes; press Answer: both answers are the library's
    for that image without and with the clamp, the top-images strip shows the feature's top 6 gallery
    images with the library's activations, and the heat map is drawn with the library's patch maximum."""
    from saesteer.demos.vision_images import open_gallery_image
    from saesteer.demos.vision_model import TOP_IMAGES
    from saesteer.demos.vision_tab import EXAMPLE_SEARCH
    from saesteer.metrics import patch_activation_map, top_images
    from saesteer.metrics.image_activations import image_activations

    steered, proc, labels, gallery = vision
    page = browser
    page.open(app_url)
    page.open_tab("Vision")
    page.type("vision-search", EXAMPLE_SEARCH)
    page.click("vision-search-btn")
    first = "#vision-results [data-testid='cell-0-0']"
    page.wait_for(lambda: page.driver.find_elements("css selector", first), 120, "no search results")
    page.find(first).click()
    page.wait_for(lambda: page.value("vision-feature") and page.value("vision-value"), 30,
                  "clicking a match did not pick it")
    feature, value = int(page.value("vision-feature")), float(page.value("vision-value"))
    rec = labels[feature]
    assert rec["label"] == EXAMPLE_SEARCH or any(EXAMPLE_SEARCH in n.lower() for n in rec["names"])
    assert value == pytest.approx(2 * rec["max_activation"])

    images = [open_gallery_image(r) for r in gallery]
    held = [i for i, r in enumerate(gallery) if r["split"] == "heldout"]
    changed = []
    for s in range(0, len(held), 16):  # held-out images whose answer the clamp changes, 16 at a time
        some = held[s:s + 16]
        before = library_answers(vision, [images[i] for i in some])
        after = library_answers(vision, [images[i] for i in some], edits={feature: value})
        changed += [i for i, a, b in zip(some, before, after) if a != b]
        if changed:
            break
    for i in changed:  # the batch picks candidates; the page is checked against single-image calls
        want_plain = library_answers(vision, [images[i]])[0]
        want_steered = library_answers(vision, [images[i]], edits={feature: value})[0]
        if want_plain != want_steered:
            break
    else:
        pytest.fail(f"clamping feature {feature} to {value} changes no held-out answer")

    css = f"#vision-gallery button[aria-label='Thumbnail {i + 1} of {len(gallery)}']"
    thumb = page.wait_for(lambda: page.driver.find_elements("css selector", css), 30, "no thumbnail")[0]
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", thumb)
    thumb.click()
    page.wait_for(lambda: page.text("vision-chosen").startswith(f"gallery image {i}:"), 30, "picking did not take")
    page.click("vision-run")
    page.wait_for(lambda: "done" in page.text("vision-status") or page.error("vision-error"), 300,
                  "answering never finished")
    assert not page.error("vision-error"), page.error("vision-error")
    assert page.value("vision-unsteered") == want_plain
    assert page.value("vision-steered") == want_steered

    batches = [proc.pixel_values(images[s:s + 16]) for s in range(0, len(images), 16)]
    acts = image_activations(steered, batches, positions="patches", reduce="max")
    top = top_images(acts, [feature], k=TOP_IMAGES).of(feature)
    assert len(top) == TOP_IMAGES, f"feature {feature} fires on fewer than {TOP_IMAGES} gallery images"

    def strip() -> list[str]:
        return [c.text for c in page.driver.find_elements("css selector", "#vision-top .caption-label")]

    page.wait_for(lambda: len(strip()) == TOP_IMAGES, 30, "the top-images strip does not show 6 images")
    assert [c.split()[0] for c in strip()] == [f"{v:.2f}" for _, v in top]
    assert [c.split(" | ", 1)[1].startswith(f"{gallery[j]['kind']}: {gallery[j]['name']}") for c, (j, _) in
            zip(strip(), top)] == [True] * TOP_IMAGES
    here = float(patch_activation_map(steered, proc.pixel_values([images[i]]), feature).max())
    heat = page.find("#vision-heatmap img")
    assert heat.get_attribute("src")
    assert f"feature {feature} over this image's" in page.text("vision-heat-caption")
    assert f"max {here:.2f} here" in page.text("vision-heat-caption")
    loaded = ("return [...document.querySelectorAll('#vision-top img, #vision-heatmap img')]"
              ".every(i => i.naturalWidth > 0)")
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", heat)
    page.wait_for(lambda: page.driver.execute_script(loaded), 30, "the images never loaded")  # they load lazily
    page.screenshot("vision")


def test_vision_tab_answers_about_an_upload_and_refuses_bad_input(app_url, vision, browser, tmp_path):
    """No image, an unknown feature, an out-of-range clamp value: each a one-line message in the page.
    An uploaded cut-out (transparent background) is answered about as the library answers about the file."""
    import numpy as np
    from PIL import Image

    from saesteer.demos.vision_images import open_gallery_image
    from saesteer.demos.vision_model import default_clamp

    steered, _, labels, gallery = vision
    page = browser
    page.open(app_url)
    page.open_tab("Vision")
    page.type("vision-feature", "3")
    page.click("vision-run")
    page.wait_for(lambda: "pick an image" in page.error("vision-error"), 120, "no error without an image")
    page.wait_for(lambda: page.driver.find_elements("css selector", "#vision-gallery button.thumbnail-item"), 30,
                  "the gallery never showed")[0].click()
    page.wait_for(lambda: page.text("vision-chosen").startswith("gallery image 0:"), 30, "picking did not take")
    for feat, val, msg in [(steered.sae.d_sae, "1", "does not exist"), (3, "1e9", "within"), (3, "many", "number")]:
        page.type("vision-feature", str(feat))
        page.type("vision-value", val)
        page.click("vision-run")
        page.wait_for(lambda: msg in page.error("vision-error"), 60, f"no error for feature {feat}, value {val}")
    assert "Traceback" not in page.driver.page_source

    rgba = np.asarray(open_gallery_image(gallery[-1]).convert("RGBA")).copy()
    rgba[..., 3] = np.where((rgba[..., :3] > 245).all(-1), 0, 255)  # the white background made transparent
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba).save(path)
    want = library_answers(vision, [Image.open(path)])[0]
    want_steered = library_answers(vision, [Image.open(path)], edits={3: default_clamp(labels, 3)})[0]
    page.type("vision-value", "")
    page.click("vision-search-btn")  # a search clears the error box: no stale error below
    page.wait_for(lambda: not page.error("vision-error"), 60, "the error stayed")
    page.find("#vision-image input[type='file']").send_keys(str(path))
    page.wait_for(lambda: page.text("vision-chosen") == "your upload", 60, "the upload did not take")
    page.click("vision-run")
    page.wait_for(lambda: "done" in page.text("vision-status") or page.error("vision-error"), 300,
                  "answering never finished")
    assert not page.error("vision-error"), page.error("vision-error")
    assert page.value("vision-unsteered") == want
    assert page.value("vision-steered") == want_steered  # an empty value box: 2x the feature's max activation
