"""The page's Classes mode in a real browser (headless Chromium via Playwright, as
test_serve_browser.py): type class names, press Label, and see the label map drawn with
a legend of the classes present."""

from __future__ import annotations

import numpy as np
import pytest

from tapkit.utils.rle import decode_rle

from san_helpers import tiny_san_folder
from serve_helpers import encode
from test_serve_browser import CHROMIUM, CHROMIUM_ARGS, changed_fraction, picture, sample, served, snapshot

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
)


@pytest.fixture
def server(tiny_files, tmp_path):
    san = tiny_san_folder(tmp_path / "san")
    with served(["--checkpoint", str(tiny_files.checkpoint), "--segmenter", str(san)], tmp_path) as url:
        yield url


def test_classes_mode_draws_the_label_map_with_a_legend(server, tmp_path):
    from playwright.sync_api import sync_playwright

    rgb = picture()
    image_path = tmp_path / "shapes.png"
    image_path.write_bytes(encode(rgb, "PNG"))
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server + "/")
            page.wait_for_function("() => document.getElementById('status').textContent.includes('Model ready')")
            assert page.is_visible("#mode-classes") and page.is_hidden("#classes-form")
            page.set_input_files("#file", str(image_path))
            page.wait_for_function("() => document.getElementById('status').textContent.includes('ready: click')")
            snapshot(page)

            page.click("#mode-classes")
            assert page.is_visible("#classes-form")
            assert page.locator("#mode-classes").get_attribute("aria-checked") == "true"
            page.fill("#classes", "background, red circle, blue square , yellow triangle")
            with page.expect_response(lambda r: r.url.endswith("/segment") and r.request.method == "POST") as info:
                page.click("#label")
            response = info.value
            assert response.status == 200, response.text()
            assert response.request.post_data_json == {"classes": ["background", "red circle", "blue square", "yellow triangle"]}
            page.wait_for_function("() => !document.getElementById('status').classList.contains('working')")
            present = sorted((c for c in response.json()["classes"] if c["area"] > 0), key=lambda c: -c["area"])
            names = page.locator("#legend .legend-item .name").all_inner_texts()
            assert names == [c["name"] for c in present] and page.is_visible("#legend")
            biggest = decode_rle(present[0]["segmentation"])
            assert changed_fraction(page, sample(biggest, 300, np.random.default_rng(0))) > 0.9

            # Back to click mode: the map and the legend go away, clicks prompt again.
            page.click("#mode-click")
            assert page.is_hidden("#classes-form") and page.is_hidden("#legend")
            assert errors == []
        finally:
            browser.close()
