"""Training curves as a PNG (PIL only, no plotting library): one panel per metric
from the metrics.jsonl files that `tapkit train` writes.

    python scripts/plot_curves.py --segment runs/default_segment/metrics.jsonl runs/default_concepts/metrics.jsonl \
        --caption runs/default_caption/metrics.jsonl --out docs/default_model_curves.png

Several --segment files are drawn one after the other (their steps offset).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

PANELS = [("segment", "dice", "stage 1 dice loss (routed mask)"), ("segment", "mask_iou", "stage 1 train mask IoU (routed mask)"),
          ("segment", "concept", "stage 1 concept KL"), ("caption", "caption", "stage 2 caption CE (smoothed)")]
W, H, PAD = 420, 260, 40


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smooth(values: list[float], k: int = 5) -> list[float]:
    return [sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1]) for i in range(len(values))]


def panel(records: list[dict], key: str, title: str) -> Image.Image:
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((PAD, 8), title, fill="black")
    pts = [(r["step"], r[key]) for r in records if key in r]
    d.rectangle([PAD, PAD, W - 10, H - PAD], outline="black")
    if not pts:
        return img
    xs, ys = [p[0] for p in pts], smooth([p[1] for p in pts])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys + [0.0]), max(ys)
    y1 = y1 if y1 > y0 else y0 + 1

    def at(x, y):
        return (PAD + (x - x0) / max(x1 - x0, 1) * (W - 10 - PAD), H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD))

    d.line([at(x, y) for x, y in zip(xs, ys)], fill=(200, 40, 40), width=2)
    for frac in (0.0, 0.5, 1.0):
        y = y0 + frac * (y1 - y0)
        d.text((2, at(x0, y)[1] - 6), f"{y:.2f}", fill="black")
    d.text((PAD, H - PAD + 6), f"step {x0}", fill="black")
    d.text((W - 90, H - PAD + 6), f"step {x1}", fill="black")
    return img


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segment", type=Path, nargs="+", required=True)
    parser.add_argument("--caption", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    segment, offset = [], 0
    for path in args.segment:
        records = read(path)
        segment += [{**r, "step": r["step"] + offset} for r in records]
        offset = segment[-1]["step"] if segment else offset
    runs = {"segment": segment, "caption": read(args.caption)}
    sheet = Image.new("RGB", (2 * W, 2 * H), "white")
    for i, (run, key, title) in enumerate(PANELS):
        sheet.paste(panel(runs[run], key, title), ((i % 2) * W, (i // 2) * H))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)


if __name__ == "__main__":
    main()
