"""The HTML report (issue 18) as a person sees it: `figures` writes index.html, which is
opened from the file system in headless Chromium (Debian's `chromium`, driven by
Playwright): the page renders without console errors, every image loads, and the verdict
table is on screen, checked in the screenshot's pixels (its tinted verdict cells)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from test_verdicts import TRUTH, write_run  # noqa: E402

from analysis.report.html import TINTS  # noqa: E402
from experiments.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("html") / "sweep"
    rng = np.random.default_rng(11)
    for seed in range(3):
        write_run(root, {}, seed, (80 + rng.normal(0, 0.5)) / 100)
        for (knob, level), effect in TRUTH.items():
            write_run(root, {knob: level}, seed, (80 + effect + rng.normal(0, 0.5)) / 100)
    assert main(["figures", str(root)]) == 0
    return root / "figures" / "index.html"


def test_index_html_is_self_contained(report):
    text = report.read_text()
    assert text.count("data:image/png;base64,") >= 3  # forest, Fig. 5/6, cost, ...
    assert 'src="forest_effects.png"' not in text and 'href="forest_effects.pdf"' in text
    assert text.index("Verdicts") < text.index("forest_effects") < text.index("Tables")


def test_report_in_headless_chromium(report, tmp_path, browser):
    messages, failures = [], []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: failures.append(str(e)))
    page.on("requestfailed", lambda r: failures.append(r.url[:80]))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate(
        "Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    table = page.locator("table").first
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    header = page.locator("table").first.locator("th").all_inner_texts()
    assert not [m for m in messages if m.startswith("error")], messages
    assert not failures, failures
    assert len(images) >= 3 and all(ok and width > 0 for ok, width in images), images
    assert "verdict" in header
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    x0, y0 = int(box["x"]), int(box["y"])
    region = pixels[y0:y0 + int(box["height"]), x0:x0 + int(box["width"])]
    assert region.size, "the verdict table is outside the screenshot"

    def count(color: str) -> int:
        rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(region.astype(int) - rgb).sum(axis=-1) <= 6).sum())

    assert count(TINTS["better"]) > 200  # the +2-point effect's cell, tinted green
    assert count(TINTS["unresolved"]) > 200  # the null effect's cell, tinted grey
    dark = (region.sum(axis=-1) < 200).sum()
    assert dark > 500  # text is drawn in the table, not an empty box
