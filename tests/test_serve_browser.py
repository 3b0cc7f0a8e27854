"""The page in a real browser: headless Chromium (the Debian package) driven by Playwright
opens the page served by `tapkit serve` on a tiny model, uploads an image, clicks,
right-clicks, drags a box and sketches, and checks what is drawn. (docs/screenshot-serve.png
is made by scripts/screenshot_serve.py with the default model.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tapkit
from tapkit.serve.launch import canvas_point, free_port, wait_healthy
from serve_helpers import encode
from tapkit.utils.rle import decode_rle, encode_rle


def find_chromium() -> str | None:
    for name in (os.environ.get("TAPKIT_CHROMIUM"), "chromium", "chromium-browser"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)"
)

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def picture(height: int = 420, width: int = 640) -> np.ndarray:
    """A few shapes on a soft background: a red disc, a blue block, a yellow triangle, grass."""
    yy, xx = np.mgrid[:height, :width]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = np.stack([207 + 30 * yy / height, 227 + 10 * yy / height, 245 - 20 * yy / height], -1).astype(np.uint8)
    rgb[yy > 0.79 * height] = (143, 191, 106)
    rgb[(yy - 200) ** 2 + (xx - 150) ** 2 < 80**2] = (217, 65, 43)
    rgb[120:310, 300:440] = (43, 108, 217)
    inside = (yy < 300) & (yy > 110) & (np.abs(xx - 540) < (yy - 110) * 0.4)
    rgb[inside] = (242, 194, 48)
    return rgb


@contextlib.contextmanager
def served(model_args: list[str], tmp_path: Path):
    """`tapkit serve` with `model_args` in a subprocess on a free port; yields its URL."""
    port = free_port()
    src = str(Path(tapkit.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "tapkit.cli.main", "serve", "--port", str(port), "--device", "cpu",
               *model_args, "--log-level", "warning"]
    log = open(tmp_path / "server.log", "w+")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(url, process, timeout=60)
        except RuntimeError as err:
            log.seek(0)
            pytest.fail(f"{err}:\n{log.read()}")
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.fixture
def server(tiny_files, tmp_path):
    with served(["--checkpoint", str(tiny_files.checkpoint), "--tokenizer", str(tiny_files.tokenizer),
                 "--concepts", str(tiny_files.concepts)], tmp_path) as url:
        yield url


def prompt_and_answer(page, action):
    """Runs `action`, returns (the /regions request body, its JSON answer) once the page drew it."""
    def answered(r) -> bool:  # a 404 is followed by a new upload and a retry
        return r.url.endswith("/regions") and r.request.method == "POST" and r.status != 404

    with page.expect_response(answered) as info:
        action()
    response = info.value
    assert response.status == 200, response.text()
    page.wait_for_function("() => !document.getElementById('status').classList.contains('working')")
    return response.request.post_data_json, response.json()


def changed_fraction(page, points) -> float:
    """The fraction of image pixels `points` whose canvas pixel differs from the snapshot."""
    return page.evaluate(
        """(points) => {
            const c = document.getElementById('canvas');
            const now = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const before = window.__before;
            let changed = 0;
            for (const [x, y] of points) {
                const [cx, cy] = window.tapkit.toCanvas(x + 0.5, y + 0.5);
                const i = 4 * (Math.floor(cy) * c.width + Math.floor(cx));
                const d = Math.abs(now[i] - before[i]) + Math.abs(now[i + 1] - before[i + 1]) + Math.abs(now[i + 2] - before[i + 2]);
                if (d > 12) changed++;
            }
            return changed / points.length;
        }""",
        points,
    )


def snapshot(page) -> None:
    page.evaluate(
        """() => {
            const c = document.getElementById('canvas');
            window.__before = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        }"""
    )


def sample(mask: np.ndarray, n: int, rng) -> list[list[int]]:
    ys, xs = np.nonzero(mask)
    pick = rng.choice(len(ys), size=min(n, len(ys)), replace=False)
    return [[int(xs[i]), int(ys[i])] for i in pick]


def test_page_draws_masks_names_and_captions(server, tmp_path):
    from playwright.sync_api import sync_playwright

    rgb = picture()
    image_path = tmp_path / "shapes.png"
    image_path.write_bytes(encode(rgb, "PNG"))
    rng = np.random.default_rng(0)
    errors: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(server + "/")
            page.wait_for_function("() => document.getElementById('status').textContent.includes('Model ready')")

            page.set_input_files("#file", str(image_path))
            page.wait_for_function("() => document.getElementById('status').textContent.includes('ready: click')")
            assert page.is_hidden("#drop")
            snapshot(page)

            # Left click: one foreground point; the mask, its name and caption are drawn.
            x, y = canvas_point(page, 150, 200)
            sent, answer = prompt_and_answer(page, lambda: page.mouse.click(x, y))
            assert sent["prompts"] == [{"points": [[150, 200, 1]]}]
            region = answer["regions"][0]
            mask = decode_rle(region["mask"])
            assert mask.shape == rgb.shape[:2] and mask.any()
            assert changed_fraction(page, sample(mask, 300, rng)) > 0.95
            if (~mask).sum() > 1000:
                outside = [p for p in sample(~mask, 300, rng) if abs(p[0] - 150) > 12 or abs(p[1] - 200) > 12]
                assert changed_fraction(page, outside) < 0.2
            item = page.locator("#regions .region").first
            assert item.locator(".concept").inner_text() == region["concept"]
            assert region["caption"] and item.locator(".caption").inner_text() == region["caption"]
            labels = page.evaluate("() => window.tapkit.state.labels.map((l) => l.text)")
            assert labels == [f"{region['concept']}  {region['concept_score']:.2f}\n{region['caption']}"]

            # Right click refines the same region with a background point.
            x, y = canvas_point(page, 600, 60)
            sent, answer = prompt_and_answer(page, lambda: page.mouse.click(x, y, button="right"))
            assert sent["prompts"] == [{"points": [[150, 200, 1], [600, 60, 0]]}]
            assert page.locator("#regions .region").count() == 1

            # Enter keeps it; a drag draws a box for a new region.
            page.keyboard.press("Enter")
            (x1, y1), (x2, y2) = canvas_point(page, 300, 120), canvas_point(page, 440, 310)

            def drag_box():
                page.mouse.move(x1, y1)
                page.mouse.down()
                page.mouse.move((x1 + x2) / 2, (y1 + y2) / 2, steps=4)
                page.mouse.move(x2, y2, steps=4)
                page.mouse.up()

            sent, answer = prompt_and_answer(page, drag_box)
            (box_prompt,) = sent["prompts"]
            assert list(box_prompt) == ["box"]
            assert np.allclose(box_prompt["box"], [300, 120, 440, 310], atol=1.5)
            assert page.locator("#regions .region").count() == 2

            # Sketch mode: a drag becomes a polyline.
            page.keyboard.press("Enter")
            page.keyboard.press("s")
            stroke = [canvas_point(page, px, py) for px, py in [(500, 280), (530, 220), (545, 160), (575, 280)]]

            def sketch():
                page.mouse.move(*stroke[0])
                page.mouse.down()
                for point in stroke[1:]:
                    page.mouse.move(*point, steps=5)
                page.mouse.up()

            sent, answer = prompt_and_answer(page, sketch)
            (sketch_prompt,) = sent["prompts"]
            assert list(sketch_prompt) == ["sketch"] and len(sketch_prompt["sketch"]) >= 4
            assert page.locator("#regions .region").count() == 3

            # Undo drops the sketch; hovering a list item highlights it.
            page.click("#undo")
            page.wait_for_function("() => document.querySelectorAll('#regions .region').length === 2")
            page.locator("#regions .region").first.hover()
            assert "hover" in page.locator("#regions .region").first.get_attribute("class")
            page.keyboard.press("b")
            x, y = canvas_point(page, 560, 260)
            prompt_and_answer(page, lambda: page.mouse.click(x, y))
            page.mouse.move(5, 5)

            # If the server forgot the image, the page uploads it again and retries.
            old_id = page.evaluate("() => window.tapkit.state.imageId")
            assert page.evaluate(f"async () => (await fetch('/v1/images/{old_id}', {{method: 'DELETE'}})).status") == 204
            with page.expect_response(lambda r: r.url.endswith("/v1/images") and r.status == 201):
                sent, answer = prompt_and_answer(page, lambda: page.mouse.click(x, y))
            new_id = page.evaluate("() => window.tapkit.state.imageId")
            assert new_id != old_id and answer["image"]["id"] == new_id
            assert sent["prompts"] == [{"points": [[560, 260, 1], [560, 260, 1]]}]

            # The page's RLE decoder agrees with pycocotools.
            masks = [np.zeros((7, 5), bool), np.ones((9, 4), bool), rng.random((31, 45)) > 0.5]
            big = np.zeros((600, 700), bool)
            big[50:550, 100:650] = True
            big[200:300, 10:690] = False
            masks.append(big)
            for m in masks:
                decoded = page.evaluate("(rle) => Array.from(window.tapkit.decodeRle(rle))", encode_rle(m))
                assert np.array_equal(np.array(decoded, bool).reshape(m.shape), m)

            assert [e for e in errors if "404" not in e] == []  # the deliberate 404 above is logged
            assert len(errors) <= 1
            page.locator("#regions .region").nth(1).hover()
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
