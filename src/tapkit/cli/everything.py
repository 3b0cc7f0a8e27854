"""`tapkit everything`: every region of every image, segmented, named and captioned."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from tapkit.cli.common import add_model_options, model_from_args
from tapkit.errors import UserError
from tapkit.everything.batch import collect_images, run_batch, write_index
from tapkit.everything.generator import MASKS_PER_POINT, RANK_BY, EverythingConfig, EverythingGenerator
from tapkit.runtime import runtime

EPILOG = """\
outputs (inside --output):
  KEY.json          regions of one image: COCO RLE mask, bbox [x, y, w, h], area, score
                    (predicted IoU), stability, point, concept + top-k, caption
  KEY.overlay.png   with --overlay: the masks drawn on the image
  KEY is the image's path relative to the input folder (or to the common folder of the
  given files), e.g. photos/cat.jpg -> OUT/photos/cat.jpg.json

resume and sharding:
  Images whose KEY.json exists are skipped (use --overwrite to redo them). Under torchrun
  each rank r of w takes images r, r+w, r+2w, ... of the sorted list, e.g.
    torchrun --nproc_per_node 8 -m tapkit.cli.main everything --input-dir photos -o out --index
  Unreadable images are reported on stderr (and in the index as "failed") and skipped;
  they do not change the exit status (0; 2 on bad usage). A rerun retries them.

examples:
  tapkit everything photo.jpg --checkpoint tap_vit_b_v1_1.pkl --tokenizer text_tokenizer.model \\
      --concepts merged_2560.pkl --output out/ --overlay
  tapkit everything --input-dir photos/ --output out/ --points-per-side 16 --no-caption
"""


BATCH_BARRIER_TIMEOUT = timedelta(hours=72)

def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "everything",
        help="segment, name and caption every region of images (automatic mode)",
        description=(
            "Prompt a grid of points, keep the masks that pass the predicted-IoU, stability and "
            "NMS filters, and name and caption only those. Works on single images, folders and "
            "file lists, resumes interrupted runs and shards across processes under torchrun."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
    p.add_argument("--input-dir", metavar="DIR", help="process every image under DIR (recursively)")
    p.add_argument("--file-list", metavar="LIST.txt", help="a text file with one image path per line")
    p.add_argument("--output", "-o", required=True, metavar="OUT_DIR", help="folder for the results")
    p.add_argument("--overlay", action="store_true", help="also write KEY.overlay.png per image")
    p.add_argument("--index", action="store_true", help="write OUT_DIR/index.jsonl listing every image of the run")
    p.add_argument("--overwrite", action="store_true", help="redo images that already have results")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    d = EverythingConfig()
    shipped = " (default: the model's own, shipped in its checkpoint; else {})"
    grid = p.add_argument_group("grid and crops")
    grid.add_argument("--points-per-side", type=int, metavar="N", help="N x N point grid" + shipped.format(d.points_per_side))
    grid.add_argument("--points-per-batch", type=int, default=d.points_per_batch, metavar="N", help=f"points decoded together (default: {d.points_per_batch})")
    grid.add_argument("--masks-per-point", choices=MASKS_PER_POINT, help="'all': masks 1-3 of every point are candidates; 'best': only the routed best" + shipped.format(d.masks_per_point))
    grid.add_argument("--crop-layers", type=int, default=d.crop_layers, metavar="L", help="extra layers of overlapping crops, layer i = 2^i x 2^i tiles (default: 0)")
    grid.add_argument("--crop-overlap-ratio", type=float, default=d.crop_overlap_ratio, metavar="R", help=f"crop overlap as a fraction of the short side (default: {d.crop_overlap_ratio:.3f})")
    grid.add_argument("--crop-points-downscale", type=int, default=d.crop_points_downscale, metavar="F", help="divide the grid size by F per crop layer (default: 1)")

    filt = p.add_argument_group("filters (the packaged default model ships its own thresholds, see docs/everything.md)")
    filt.add_argument("--pred-iou-thresh", type=float, metavar="T", help="keep masks with predicted IoU above T" + shipped.format(d.pred_iou_thresh))
    filt.add_argument("--stability-thresh", type=float, metavar="T", help="keep masks with stability score >= T" + shipped.format(d.stability_thresh))
    filt.add_argument("--stability-offset", type=float, metavar="O", help="logit offset of the stability score" + shipped.format(d.stability_offset))
    filt.add_argument("--max-border-connectivity", type=float, metavar="C", help="drop masks lying along the image border: pixels on the border / sqrt(area) above C (background patches; inf: off)" + shipped.format("off"))
    filt.add_argument("--rank-by", choices=RANK_BY, help="the score NMS and the region order use: predicted IoU or stability" + shipped.format("iou"))
    filt.add_argument("--nms-thresh", type=float, metavar="T", help="box NMS IoU threshold" + shipped.format(d.box_nms_thresh))
    filt.add_argument("--mask-nms-thresh", type=float, metavar="T", help="then drop the lower-scored of two kept regions whose masks overlap with IoU above T (1: off)" + shipped.format(d.mask_nms_thresh))
    filt.add_argument("--crop-nms-thresh", type=float, default=d.crop_nms_thresh, metavar="T", help=f"box NMS IoU threshold between crops (default: {d.crop_nms_thresh})")
    filt.add_argument("--min-region-area", type=int, metavar="PX", help="remove islands and holes smaller than PX pixels and drop regions smaller than PX (0: off; needs scipy)" + shipped.format(d.min_region_area))
    filt.add_argument("--max-regions", type=int, default=None, metavar="N", help="keep at most N regions per image, best predicted IoU first")

    sem = p.add_argument_group("concepts and captions")
    sem.add_argument("--top-k", type=int, default=d.top_k, metavar="K", help=f"concepts listed per region (default: {d.top_k})")
    sem.add_argument("--concept-vote-iou", type=float, metavar="T", help="name each region by the mean concepts of the candidates overlapping it with mask IoU >= T (0: off, its own)" + shipped.format("off"))
    sem.add_argument("--no-caption", action="store_true", help="skip captioning")
    sem.add_argument("--caption-batch", type=int, default=d.caption_batch, metavar="N", help=f"regions captioned together (default: {d.caption_batch})")
    add_model_options(p)
    p.set_defaults(func=run)


# Flags whose default is the model's own setting (None: not given).
MODEL_SETTINGS = {"points_per_side": "points_per_side", "masks_per_point": "masks_per_point",
                  "pred_iou_thresh": "pred_iou_thresh", "stability_thresh": "stability_thresh",
                  "stability_offset": "stability_offset", "box_nms_thresh": "nms_thresh", "mask_nms_thresh": "mask_nms_thresh",
                  "max_border_connectivity": "max_border_connectivity", "concept_vote_iou": "concept_vote_iou",
                  "rank_by": "rank_by",
                  "min_region_area": "min_region_area"}


def settings_from_args(args: argparse.Namespace) -> dict:
    """The settings the user gave: these win over the model's own."""
    given = {field: getattr(args, flag) for field, flag in MODEL_SETTINGS.items() if getattr(args, flag) is not None}
    return dict(
        given,
        points_per_batch=args.points_per_batch,
        crop_layers=args.crop_layers,
        crop_overlap_ratio=args.crop_overlap_ratio,
        crop_points_downscale=args.crop_points_downscale,
        crop_nms_thresh=args.crop_nms_thresh,
        max_regions=args.max_regions,
        top_k=args.top_k,
        captions=not args.no_caption,
        caption_batch=args.caption_batch,
    )


def config_from_args(args: argparse.Namespace, model=None) -> EverythingConfig:
    """The user's flags over `model`'s own settings (over SAM's defaults without a model)."""
    settings = settings_from_args(args)
    return EverythingConfig.for_model(model, **settings) if model is not None else EverythingConfig(**settings)


def run(args: argparse.Namespace) -> int:
    config_from_args(args)  # bad settings: one line before any model is loaded
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output must be a folder, but {out_dir} is a file")
    jobs = collect_images(args.images, args.input_dir, args.file_list, exclude=out_dir)
    # Ranks only meet at the end (for the index), so a slow rank may keep the others
    # waiting for hours: gloo (no GPU stream held) and a long timeout.
    with runtime(args.device, BATCH_BARRIER_TIMEOUT, backend="gloo") as rt:
        args.device = str(rt.device)
        model = model_from_args(args)
        generator = EverythingGenerator(model, config_from_args(args, model))
        summary = run_batch(
            generator,
            jobs,
            out_dir,
            runtime=rt,
            overlay=args.overlay,
            overwrite=args.overwrite,
            index_parts=args.index,
            progress=not args.no_progress,
        )
        where = f"rank {rt.rank}/{rt.world_size}: " if rt.distributed else ""
        print(
            f"{where}images processed {summary.processed}, already done {summary.already_done}, "
            f"failed {len(summary.failed)}; {summary.regions} regions in {summary.seconds:.1f} s",
            file=sys.stderr,
        )
        for path, reason in summary.failed:
            print(f"{where}failed: {path}: {reason}", file=sys.stderr)
        if args.index:
            rt.barrier()
            if rt.is_main:
                counts = write_index(jobs, out_dir, out_dir / "index.jsonl")
                print(f"wrote {out_dir / 'index.jsonl'} ({', '.join(f'{n} {s}' for s, n in counts.items())})", file=sys.stderr)
    if summary.failed and not summary.processed and not summary.already_done:
        print(f"tapkit everything: {where}nothing was processed: all {len(summary.failed)} image(s) failed", file=sys.stderr)
        return 1
    return 0
