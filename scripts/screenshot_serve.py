"""Makes docs/screenshot-serve.png: starts `tapkit serve` (the packaged default model
unless --checkpoint is given), opens the page in headless Chromium, uploads an image,
clicks the given points (each click a new region) and saves a screenshot.

    python scripts/screenshot_serve.py --image examples/shapes.png \
        --click 120,80 --click 240,150 --click 248,50 --click 80,185 --out docs/screenshot-serve.png

Needs the [serve] and [dev] extras (Playwright) and Chromium (/usr/bin/chromium)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from tapkit.serve.launch import canvas_point, free_port, wait_healthy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=Path("examples/shapes.png"))
    parser.add_argument("--click", action="append", default=[], metavar="X,Y", help="image pixel to click (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshot-serve.png"))
    parser.add_argument("--checkpoint", help="model (default: the packaged default model)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    clicks = [tuple(float(v) for v in c.split(",")) for c in args.click] or [(120.0, 80.0)]

    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "tapkit.cli.main", "serve", "--port", str(port), "--device", "cpu", "--log-level", "warning"]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    process = subprocess.Popen(command)
    try:
        wait_healthy(url, process, timeout=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--headless"])
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(url + "/")
            page.wait_for_function("() => document.getElementById('status').textContent.includes('Model ready')")
            page.set_input_files("#file", str(args.image))
            page.wait_for_function("() => document.getElementById('status').textContent.includes('ready: click')")
            for i, (x, y) in enumerate(clicks):
                if i:
                    page.click("#keep")
                cx, cy = canvas_point(page, x, y)
                with page.expect_response(lambda r: r.url.endswith("/regions") and r.request.method == "POST"):
                    page.mouse.click(cx, cy)
                page.wait_for_function("() => !document.getElementById('status').classList.contains('working')")
            page.mouse.move(2, 2)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            partial = args.out.with_name(args.out.name + ".partial.png")
            page.screenshot(path=str(partial))
            os.replace(partial, args.out)
            browser.close()
    finally:
        process.terminate()
        process.wait(10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
