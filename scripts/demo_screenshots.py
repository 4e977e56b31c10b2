"""Make README's screenshots of the demo: start ``saesteer demo`` offline, drive each tab in headless
Chromium (the browser tests' harness, tests/demo_harness.py) and save small PNGs under docs/.

    python scripts/demo_screenshots.py   # docs/demo-steer.png, demo-erase.png, demo-reward.png, demo-vision.png

Needs what the browser tests need (``make install``: chromium, chromium-driver, selenium). About a
minute on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from demo_harness import chromium, running_demo  # noqa: E402

STEER = {"prompt": "Tell me about the sea.", "search": "kjv", "feature": 1309, "value": 160}
#: the Vision tab: the first match of ``search`` clamped (at 2 x its max activation) on the first held-out
#: gallery image of kind ``image_kind``
VISION = {"search": "bird", "image_kind": "animal"}


def vision_screenshot(page) -> None:
    """Drive the Vision tab (see ``VISION``) and save ``vision``."""
    from saesteer.embedded.vlm import tiny_llava_gallery

    gallery = tiny_llava_gallery()
    i = next(n for n, r in enumerate(gallery) if r["split"] == "heldout" and r["kind"] == VISION["image_kind"])
    page.open_tab("Vision")
    page.type("vision-search", VISION["search"])
    page.click("vision-search-btn")
    first = "#vision-results [data-testid='cell-0-0']"
    page.wait_for(lambda: page.driver.find_elements("css selector", first), 300, "no search results")
    page.find(first).click()
    page.wait_for(lambda: page.value("vision-value"), 60, "picking a match did not take")
    thumb = page.find(f"#vision-gallery button[aria-label='Thumbnail {i + 1} of {len(gallery)}']")
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", thumb)
    thumb.click()
    page.wait_for(lambda: page.text("vision-chosen").startswith(f"gallery image {i}:"), 60, "no image picked")
    page.click("vision-run")
    page.wait_for(lambda: "done" in page.text("vision-status") or page.error("vision-error"), 600, "no answers")
    loaded = ("return [...document.querySelectorAll('#vision-top img, #vision-heatmap img')]"
              ".every(i => i.naturalWidth > 0)")
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", page.find("#vision-heatmap"))
    page.wait_for(lambda: page.driver.execute_script(loaded), 60, "the images never loaded")
    page.screenshot("vision")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs", help="folder under the repo for the PNGs (default docs)")
    p.add_argument("--new-tokens", type=int, default=40)
    a = p.parse_args(argv)
    os.environ["SAESTEER_DOCS_SCREENSHOTS"] = a.out
    with running_demo("--max-new-tokens", str(a.new_tokens)) as url, chromium(width=1280) as page:
        page.open(url)
        page.type("steer-prompt", STEER["prompt"])
        page.type("steer-search", STEER["search"])
        page.click("steer-search-btn")
        page.wait_for(lambda: page.driver.find_elements("css selector", "#steer-results [data-testid='cell-0-0']"),
                      120, "no search results")
        page.type("steer-feature", str(STEER["feature"]))
        page.choose("steer-kind", "clamp")
        page.type("steer-value", str(STEER["value"]))
        page.click("steer-add")
        page.click("steer-generate")
        page.wait_for(lambda: "done" in page.text("steer-status") or page.error("steer-error"), 600, "no output")
        page.screenshot("steer")

        page.open_tab("Erase")
        page.click("erase-find")
        page.wait_for(lambda: "reliability" in page.text("erase-summary") or page.error("erase-error"), 600, "no edit")
        page.click("erase-probe")
        page.wait_for(lambda: page.value("erase-after") or page.error("erase-error"), 600, "no probe")
        page.screenshot("erase")

        page.open_tab("Reward")
        page.click("reward-score")
        page.wait_for(lambda: "preferred" in page.text("reward-summary") or page.error("reward-error"), 600,
                      "no scores")
        page.type("reward-w0", "0")
        page.wait_for(lambda: "before reweighting" in page.text("reward-summary"), 120, "no reweighting")
        page.screenshot("reward")

        if any(b.text.strip() == "Vision" for b in page.driver.find_elements("css selector", "button[role='tab']")):
            vision_screenshot(page)
    print(f"screenshots in {REPO / a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
