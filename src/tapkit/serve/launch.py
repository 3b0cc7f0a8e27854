"""Running `tapkit serve` as a child process and finding image pixels on its page: what
the browser test and scripts/screenshot_serve.py share."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Waits until `url`/healthz answers 200; RuntimeError if the process exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tapkit serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"tapkit serve did not answer within {timeout:.0f} s")


def canvas_point(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) on the page's canvas (a Playwright page)."""
    return page.evaluate(
        """([x, y]) => {
            const [cx, cy] = window.tapkit.toCanvas(x, y);
            const rect = document.getElementById('canvas').getBoundingClientRect();
            const dpr = window.devicePixelRatio || 1;
            return [rect.left + cx / dpr, rect.top + cy / dpr];
        }""",
        [x, y],
    )
