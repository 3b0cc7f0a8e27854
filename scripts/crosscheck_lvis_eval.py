"""Cross-check tapkit's LVIS AP (COCOeval + LVIS rules) against the official LVIS API.

The LVIS API (lvis 0.5.3) does not run on NumPy >= 1.24, so tapkit does not depend on
it; this script loads it anyway (its modules only, with `np.float` put back) and
compares every number on random LVIS-style data: ties in scores, more than 300
detections per image, negative and not-exhaustive category lists, boxes and masks.

    pip install --no-deps --target /tmp/lvispkg lvis==0.5.3
    PYTHONPATH=src python scripts/crosscheck_lvis_eval.py --lvis-path /tmp/lvispkg
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from tapkit.evaluation.detection_metrics import coco_from_dataset, lvis_ap

def load_official(path: Path):
    """Imports lvis.lvis / lvis.results / lvis.eval without the package __init__ (which
    needs OpenCV and matplotlib for visualisation)."""
    np.float = float  # removed in NumPy 1.24; lvis 0.5.3 still uses it
    package = types.ModuleType("lvis")
    package.__path__ = [str(path / "lvis")]
    sys.modules["lvis"] = package
    from lvis.eval import LVISEval
    from lvis.lvis import LVIS
    from lvis.results import LVISResults

    return LVIS, LVISResults, LVISEval


def random_dataset(rng: np.random.Generator, num_images: int, num_cats: int) -> tuple[dict, list[dict]]:
    images, anns, results = [], [], []
    cats = [{"id": c + 1, "name": f"c{c}", "frequency": "rcf"[c % 3]} for c in range(num_cats)]
    for i in range(num_images):
        h, w = int(rng.integers(80, 420)), int(rng.integers(80, 420))
        image_id = i + 1
        present = set()
        for _ in range(int(rng.integers(0, 8))):
            c = int(rng.integers(1, num_cats + 1))
            bw, bh = float(rng.integers(4, w // 2)), float(rng.integers(4, h // 2))
            x, y = float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh))
            poly = [[x, y, x + bw, y, x + bw * 0.6, y + bh, x, y + bh * 0.8]]
            rle = mask_utils.merge(mask_utils.frPyObjects(poly, h, w))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": c, "bbox": [x, y, bw, bh], "area": float(mask_utils.area(rle)), "segmentation": poly})
            present.add(c)
            for _ in range(int(rng.integers(0, 4))):  # jittered true positives
                jx, jy = rng.normal(0, bw * 0.15), rng.normal(0, bh * 0.15)
                results.append(_result(rng, image_id, c if rng.random() < 0.8 else int(rng.integers(1, num_cats + 1)), x + jx, y + jy, bw, bh, h, w))
        absent = [c["id"] for c in cats if c["id"] not in present]
        rng.shuffle(absent)
        images.append({"id": image_id, "height": h, "width": w, "neg_category_ids": absent[:3], "not_exhaustive_category_ids": sorted(rng.choice(sorted(present), size=min(1, len(present)), replace=False).tolist()) if present and rng.random() < 0.5 else []})
        for _ in range(int(rng.integers(0, 40 if i % 5 else 400))):  # some images above 300
            bw, bh = float(rng.integers(4, w // 2)), float(rng.integers(4, h // 2))
            results.append(_result(rng, image_id, int(rng.integers(1, num_cats + 1)), float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh)), bw, bh, h, w))
    return {"images": images, "annotations": anns, "categories": cats}, results


def _result(rng, image_id, cat, x, y, bw, bh, h, w) -> dict:
    score = float(np.round(rng.random(), 2))  # rounded: plenty of ties
    x, y = float(np.clip(x, 0, w - 2)), float(np.clip(y, 0, h - 2))
    rle = mask_utils.frPyObjects([[x, y, x + bw, y, x + bw, y + bh, x, y + bh]], h, w)[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh], "score": score, "segmentation": rle}


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lvis-path", required=True, type=Path, help="folder holding the lvis package")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    LVIS, LVISResults, LVISEval = load_official(args.lvis_path)
    worst = 0.0
    for seed in range(args.seeds):
        dataset, results = random_dataset(np.random.default_rng(seed), num_images=30, num_cats=12)
        for iou_type in ("bbox", "segm"):
            dets = [{k: v for k, v in r.items() if k != ("segmentation" if iou_type == "bbox" else "bbox")} for r in results]
            ours = lvis_ap(coco_from_dataset(dataset), copy.deepcopy(dets), iou_type)
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "gt.json").write_text(json.dumps(dataset))
                gt = LVIS(str(Path(tmp) / "gt.json"))
            official = LVISEval(gt, LVISResults(gt, copy.deepcopy(dets)), iou_type)
            official.run()
            theirs = {k: 100.0 * v if v != -1 else None for k, v in official.get_results().items()}
            diffs = {k: 0.0 if ours[k] is None and theirs[k] is None else
                     float("inf") if None in (ours[k], theirs[k]) else abs(ours[k] - theirs[k]) for k in theirs}
            worst = max(worst, *diffs.values())
            print(f"seed {seed} {iou_type}: " + " ".join(f"{k}={_shown(ours[k])}/{_shown(theirs[k])}" for k in theirs))
    print(f"largest difference: {worst:.2e}")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
