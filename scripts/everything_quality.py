"""Automatic mode against annotated shapes: recall (shapes found with mask IoU >= 0.8
and the right shape name), precision (kept regions that find a shape) and duplicates
(extra kept regions on one shape, mask IoU >= 0.5); see tapkit/everything/quality.py.

    # the settings the model ships (or SAM's where it ships none), one row per directory
    python scripts/everything_quality.py scratch/plain_sep scratch/world_eval/sa1b --max-images 20
    # any setting given wins over the model's
    python scripts/everything_quality.py scratch/plain_sep --pred-iou-thresh 0.8 --stability-thresh 0.9
    # sweep the filter thresholds: candidates are decoded once per grid size at loose thresholds
    # (box NMS 0.95), then filtered again per setting (an approximation of a direct run:
    # confirm the chosen setting without --sweep)
    python scripts/everything_quality.py scratch/plain_sep --sweep --points-per-side 16 32 --output sweep.json
    # the shipped settings were chosen with (on tuning splits, docs/everything.md):
    python scripts/everything_quality.py scratch/plain_tune scratch/world_tune2/sa1b scratch/world_tune3/sa1b --sweep \
        --points-per-side 16 --iou-grid 0.6 0.7 0.75 --stability-grid 0.8 0.85 0.9 --nms-grid 0.7 --mask-nms-grid 0.3 \
        --border-grid inf 0.2 0.5 --rank-grid iou stability
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json

import numpy as np
import torch
from tqdm import tqdm

import tapkit
from tapkit.data.records import SkipCounter, load_rgb
from tapkit.data.sa1b import read_sa1b
from tapkit.everything.filters import border_connectivity, mask_nms, nms
from tapkit.everything.generator import EverythingConfig, EverythingGenerator
from tapkit.everything.quality import judge_regions, measure_everything, summarize

LOOSE = dict(pred_iou_thresh=0.5, stability_thresh=0.5, box_nms_thresh=0.95, max_border_connectivity=None, mask_nms_thresh=1.0)


def candidates(model, directory: str, points_per_side: int, max_images: int | None):
    """Per image: (name, truth masks, truth concepts, regions kept at the loose thresholds)."""
    config = EverythingConfig.for_model(model, points_per_side=points_per_side, captions=False, top_k=1, **LOOSE)
    generator = EverythingGenerator(model, config)
    skips, out = SkipCounter(), []
    for record in tqdm(read_sa1b(directory)[:max_images], desc=f"candidates {points_per_side}^2 {directory}", unit="img"):
        rgb = load_rgb(record.path, skips)
        if rgb is None:
            continue
        h, w = rgb.shape[:2]
        truth = [r for r in record.regions if r.concept]
        out.append((record.path.name, [r.mask(h, w) for r in truth], [r.concept for r in truth], generator.generate(rgb).regions))
    return out


def refilter(regions, pred_iou: float, stability: float, nms_thresh: float, mask_nms_thresh: float,
             border: float | None = None, rank_by: str = "iou"):
    """The generator's filters again on loose survivors: predicted IoU, stability, border
    connectivity (None: off), box NMS, mask NMS, ranked by predicted IoU or stability."""
    kept = [r for r in regions if r.score > pred_iou and r.stability >= stability]
    if border is not None and kept:
        connectivity = border_connectivity(torch.from_numpy(np.stack([r.mask for r in kept])))
        kept = [r for r, c in zip(kept, connectivity.tolist()) if c <= border]
    if not kept:
        return []
    rank = [r.score if rank_by == "iou" else r.stability for r in kept]
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r.bbox for r in kept)], dtype=torch.float32)
    order = nms(boxes, torch.tensor(rank), nms_thresh).tolist()
    kept, rank = [kept[i] for i in order], [rank[i] for i in order]
    if mask_nms_thresh < 1:
        kept = [kept[i] for i in mask_nms([r.mask for r in kept], rank, mask_nms_thresh)]
    return kept


def sweep(model, directories: list[str], args) -> list[dict]:
    rows = []
    for side in args.points_per_side:
        per_dir = {d: candidates(model, d, side, args.max_images) for d in directories}
        for pred_iou, stability, nms_thresh, mask_thresh, border, rank_by in itertools.product(
                args.iou_grid, args.stability_grid, args.nms_grid, args.mask_nms_grid, args.border_grid, args.rank_grid):
            border = None if border == float("inf") else border
            row = {"points_per_side": side, "pred_iou_thresh": pred_iou, "stability_thresh": stability,
                   "box_nms_thresh": nms_thresh, "mask_nms_thresh": mask_thresh, "max_border_connectivity": border,
                   "rank_by": rank_by}
            for d, images in per_dir.items():
                results = []
                for name, masks, concepts, regions in images:
                    kept = refilter(regions, pred_iou, stability, nms_thresh, mask_thresh, border, rank_by)
                    results.append((name, judge_regions(masks, concepts, [r.mask for r in kept], [r.concept for r in kept])))
                q = summarize(results, row)
                row[d] = {"recall": q.recall, "precision": q.precision, "duplicates": q.duplicates, "shapes": q.shapes}
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directories", nargs="+", help="SA-1B-format directories with 'concept' annotations")
    parser.add_argument("--checkpoint", help="default: the packaged model")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--points-per-side", type=int, nargs="+", default=None)
    parser.add_argument("--pred-iou-thresh", type=float)
    parser.add_argument("--stability-thresh", type=float)
    parser.add_argument("--nms-thresh", type=float)
    parser.add_argument("--masks-per-point", choices=("all", "best"))
    parser.add_argument("--sweep", action="store_true", help="sweep the three thresholds over the grids below")
    parser.add_argument("--iou-grid", type=float, nargs="+", default=[0.6, 0.7, 0.75, 0.8, 0.85, 0.88])
    parser.add_argument("--stability-grid", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.85, 0.9, 0.95])
    parser.add_argument("--nms-grid", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--mask-nms-grid", type=float, nargs="+", default=[1.0])
    parser.add_argument("--border-grid", type=float, nargs="+", default=[float("inf")], help="max border connectivity (inf: off)")
    parser.add_argument("--rank-grid", nargs="+", choices=("iou", "stability"), default=["iou"])
    parser.add_argument("--mask-nms-thresh", type=float)
    parser.add_argument("--max-border-connectivity", type=float)
    parser.add_argument("--concept-vote-iou", type=float)
    parser.add_argument("--crop-layers", type=int)
    parser.add_argument("--rank-by", choices=("iou", "stability"))
    parser.add_argument("--output", help="write the JSON results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = tapkit.load_model(args.checkpoint).eval()
    if args.sweep:
        args.points_per_side = args.points_per_side or [EverythingConfig.for_model(model).points_per_side]
        rows = sweep(model, args.directories, args)
        print("| grid | pred IoU > | stability >= | box NMS | mask NMS | border conn. <= | rank by | " + " | ".join(f"{d}: recall / precision / duplicates" for d in args.directories) + " |")
        print("| --- " * (7 + len(args.directories)) + "|")
        for row in rows:
            cells = [f"{row[d]['recall']:.3f} / {row[d]['precision']:.3f} / {row[d]['duplicates']}" for d in args.directories]
            print(f"| {row['points_per_side']} | {row['pred_iou_thresh']} | {row['stability_thresh']} | {row['box_nms_thresh']} | {row['mask_nms_thresh']} | {row['max_border_connectivity']} | {row['rank_by']} | " + " | ".join(cells) + " |")
        result = rows
    else:
        flags = {"points_per_side": args.points_per_side[0] if args.points_per_side else None,
                 "pred_iou_thresh": args.pred_iou_thresh, "stability_thresh": args.stability_thresh,
                 "box_nms_thresh": args.nms_thresh, "masks_per_point": args.masks_per_point,
                 "mask_nms_thresh": args.mask_nms_thresh, "max_border_connectivity": args.max_border_connectivity,
                 "concept_vote_iou": args.concept_vote_iou, "crop_layers": args.crop_layers, "rank_by": args.rank_by}
        config = EverythingConfig.for_model(model, captions=False, **{k: v for k, v in flags.items() if v is not None})
        generator = EverythingGenerator(model, config)
        result = {}
        print("| directory | images | shapes | regions | recall | precision | duplicates | images with duplicates | max box IoU of two kept |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for d in args.directories:
            q = measure_everything(generator, d, args.max_images)
            result[d] = q.to_dict()
            print(f"| {d} | {q.images} | {q.shapes} | {q.regions} | {q.recall:.3f} | {q.precision:.3f} | {q.duplicates} | {q.images_with_duplicates} | {q.max_kept_box_iou:.3f} |")
        print("settings:", json.dumps({k: v for k, v in dataclasses.asdict(config).items()
                                       if k in ("points_per_side", "masks_per_point", "pred_iou_thresh", "stability_thresh", "box_nms_thresh",
                                                "mask_nms_thresh", "max_border_connectivity", "concept_vote_iou", "crop_layers", "rank_by")}))
    if args.output:
        from tapkit.utils.atomic import write_text_atomic

        write_text_atomic(args.output, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
