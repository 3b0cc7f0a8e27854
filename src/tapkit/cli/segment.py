"""`tapkit segment`: open-vocabulary semantic segmentation of images with given class
names: a label map, per-class areas, scores and RLE masks, and an overlay with a legend."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path

from tapkit.cli.common import add_segmenter_options, segmenter_from_args
from tapkit.errors import UserError
from tapkit.everything.batch import ImageJob, JobOutcome, collect_images, run_jobs, write_index
from tapkit.inputs.image import read_image
from tapkit.runtime import runtime
from tapkit.segmenter.outputs import label_map_image, overlay_image, segmentation_json, tokens_image
from tapkit.segmenter.segmenter import check_classes, parse_classes
from tapkit.utils.atomic import check_output_file, write_all_atomic

EPILOG = """\
one image (--output ends in .json):
  tapkit segment photo.jpg --classes "sky,tree,road,car" --output photo.json \\
      --label-map photo.labels.png --overlay photo.overlay.png
  OUT.json: {"image": {file, height, width}, "classes": [{index, name, area, score, segmentation (COCO RLE)}]}
  label map: PNG of the image's size, pixel value = the class's index in the given list
  (16-bit when there are more than 256 classes).

many images (--output is a folder; KEY = the path relative to the input folder):
  tapkit segment --input-dir photos/ --classes-file names.txt --output out/ --label-map --overlay
  writes out/KEY.json, out/KEY.labels.png, out/KEY.overlay.png. Images whose KEY.json exists are
  skipped (--overwrite redoes them); under torchrun rank r of w takes images r, r+w, ...:
    torchrun --nproc_per_node 8 -m tapkit.cli.main segment --input-dir photos -o out --classes-file names.txt --index

PAT checkpoints (a SAN with PAT's feature-pyramid tokenizer, docs/pat.md) also draw their tokens:
  tapkit segment photo.jpg --checkpoint pat.safetensors --classes "red circle,blue star" \
      --output photo.json --tokens photo.tokens.png
  the image, each pyramid level's code map (one colour per code) and the reconstruction side by side.

No --checkpoint: the packaged SAN trained on the synthetic world (it knows `background` and
the 48 '<colour> <shape>' names, e.g. "red circle", "blue star").
"""

BATCH_BARRIER_TIMEOUT = timedelta(hours=72)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("segment", help="label every pixel with one of the given class names (open vocabulary)",
                              description="Open-vocabulary semantic segmentation with a SAN: image(s) + class names -> "
                                          "label map, per-class masks and an overlay with a legend.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
    p.add_argument("--input-dir", metavar="DIR", help="process every image under DIR (recursively)")
    p.add_argument("--file-list", metavar="LIST.txt", help="a text file with one image path per line")
    vocab = p.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--classes", metavar="A,B,C", help="comma-separated class names, in label order")
    vocab.add_argument("--classes-file", metavar="FILE", help="class names, one per line, in label order")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="OUT.json for one image, else a folder")
    p.add_argument("--label-map", nargs="?", const="", metavar="OUT.png",
                   help="write the label map PNG (one image: its path; folder: KEY.labels.png)")
    p.add_argument("--overlay", nargs="?", const="", metavar="OUT.png",
                   help="write the label map drawn on the image with a legend (one image: its path; folder: KEY.overlay.png)")
    p.add_argument("--tokens", nargs="?", const="", metavar="OUT.png",
                   help="PAT checkpoints: write each pyramid level's code map and the reconstruction beside the image "
                        "(one image: its path; folder: KEY.tokens.png)")
    p.add_argument("--index", action="store_true", help="folder mode: write OUT/index.jsonl listing every image")
    p.add_argument("--overwrite", action="store_true", help="folder mode: redo images that already have results")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_segmenter_options(p)
    p.set_defaults(func=run)


def read_classes(args: argparse.Namespace) -> list[str]:
    if args.classes is not None:
        return parse_classes(args.classes)
    path = Path(args.classes_file)
    if not path.is_file():
        raise UserError(f"classes file not found: {path}")
    return check_classes([line for line in path.read_text().splitlines() if line.strip()])


def check_tokens(args: argparse.Namespace, segmenter) -> None:
    if args.tokens is not None and not segmenter.has_tokens:
        raise UserError("--tokens needs a PAT checkpoint (a SAN with PAT's feature-pyramid tokenizer, docs/pat.md); "
                        "this model is a plain SAN")


def run(args: argparse.Namespace) -> int:
    classes = read_classes(args)
    single = args.output.endswith(".json")
    if single:
        return run_one(args, classes)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--output must be a folder (or end in .json for one image), but {out_dir} is a file")
    if args.label_map or args.overlay or args.tokens:
        raise UserError("with a folder --output, --label-map, --overlay and --tokens take no file name "
                        "(KEY.labels.png, KEY.overlay.png, KEY.tokens.png)")
    jobs = collect_images(args.images, args.input_dir, args.file_list, exclude=out_dir)
    with runtime(args.device, BATCH_BARRIER_TIMEOUT, backend="gloo") as rt:
        args.device = str(rt.device)
        segmenter = segmenter_from_args(args)
        check_tokens(args, segmenter)

        def process(job: ImageJob, rgb) -> JobOutcome:
            result = segmenter.segment(rgb, classes)
            outputs = []
            if args.label_map is not None:
                outputs.append((out_dir / f"{job.key}.labels.png", lambda tmp: label_map_image(result).save(tmp, format="PNG")))
            if args.overlay is not None:
                outputs.append((job.overlay_path(out_dir), lambda tmp: overlay_image(rgb, result).save(tmp, format="PNG")))
            if args.tokens is not None:
                picture = tokens_image(rgb, segmenter.tokens(rgb))
                outputs.append((out_dir / f"{job.key}.tokens.png", lambda tmp: picture.save(tmp, format="PNG")))
            text = json.dumps(segmentation_json(result, str(job.path)), separators=(",", ":")) + "\n"
            outputs.append((job.result_path(out_dir), lambda tmp: tmp.write_text(text)))  # last: it marks the job done
            write_all_atomic(outputs)
            return JobOutcome(int((result.areas > 0).sum()), *result.image_size)

        summary = run_jobs(process, jobs, out_dir, rt, args.overwrite, args.index, not args.no_progress, "segment")
        where = f"rank {rt.rank}/{rt.world_size}: " if rt.distributed else ""
        print(f"{where}images processed {summary.processed}, already done {summary.already_done}, "
              f"failed {len(summary.failed)} in {summary.seconds:.1f} s", file=sys.stderr)
        for path, reason in summary.failed:
            print(f"{where}failed: {path}: {reason}", file=sys.stderr)
        if args.index:
            rt.barrier()
            if rt.is_main:
                counts = write_index(jobs, out_dir, out_dir / "index.jsonl",
                                     count_of=lambda data: sum(c["area"] > 0 for c in data["classes"]))
                print(f"wrote {out_dir / 'index.jsonl'} ({', '.join(f'{n} {s}' for s, n in counts.items())})", file=sys.stderr)
    if summary.failed and not summary.processed and not summary.already_done:
        print(f"tapkit segment: {where}nothing was processed: all {len(summary.failed)} image(s) failed", file=sys.stderr)
        return 1
    return 0


def run_one(args: argparse.Namespace, classes: list[str]) -> int:
    if len(args.images) != 1 or args.input_dir or args.file_list:
        raise UserError("--output OUT.json takes exactly one IMAGE; give a folder as --output for several")
    if args.label_map == "" or args.overlay == "" or args.tokens == "":
        raise UserError("with --output OUT.json, --label-map, --overlay and --tokens need a file name")
    named = ((args.label_map, "--label-map"), (args.overlay, "--overlay"), (args.tokens, "--tokens"))
    outputs = [(args.output, "--output")] + [(p, o) for p, o in named if p]
    for path, what in outputs:
        check_output_file(path, what)
    if len({str(Path(p).resolve()) for p, _ in outputs}) < len(outputs):
        raise UserError("--output, --label-map, --overlay and --tokens must be different files")
    rgb = read_image(args.images[0])
    segmenter = segmenter_from_args(args)
    check_tokens(args, segmenter)
    result = segmenter.segment(rgb, classes)
    text = json.dumps(segmentation_json(result, args.images[0]), separators=(",", ":")) + "\n"
    writers = [(args.output, lambda tmp: tmp.write_text(text))]
    if args.label_map:
        writers.append((args.label_map, lambda tmp: label_map_image(result).save(tmp, format="PNG")))
    if args.overlay:
        writers.append((args.overlay, lambda tmp: overlay_image(rgb, result).save(tmp, format="PNG")))
    if args.tokens:
        picture = tokens_image(rgb, segmenter.tokens(rgb))
        writers.append((args.tokens, lambda tmp: picture.save(tmp, format="PNG")))
    write_all_atomic(writers)
    present = [f"{c} {a}" for c, a in zip(result.classes, result.areas) if a > 0]
    print(f"{args.images[0]}: {', '.join(present)} (pixels)")
    return 0
