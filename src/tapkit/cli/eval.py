"""`tapkit eval`: the paper's benchmarks (caption, classify, segment) and open-vocabulary
semantic segmentation (semseg), one command each."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from tapkit.cli.common import add_model_options, add_segmenter_options, model_from_args, segmenter_from_args
from tapkit.data.semseg import DATASETS, open_dataset
from tapkit.defaults import default_model_files
from tapkit.errors import UserError
from tapkit.evaluation import caption, classify, segment
from tapkit.evaluation.caption_metrics import METRICS, parse_metrics, require_java, require_pycocoevalcap
from tapkit.evaluation.report import EvalReport
from tapkit.evaluation.setup import EvalSetup, describe_model
from tapkit.predictor.predictor import Predictor
from tapkit.runtime import Runtime, init_runtime

EPILOG = """\
examples (docs/evaluation.md has the data and the expected numbers):
  tapkit eval caption --gt vg/annotations/test.json --images-dir vg/images \\
      --checkpoint tap_vit_l_v1_1.pkl --tokenizer text_tokenizer.model
  tapkit eval classify --gt lvis/annotations/lvis_val_v1.json --images-dir coco/val2017 \\
      --checkpoint tap_vit_l_v1_1.pkl --concepts lvis_1203.pkl
  tapkit eval segment --gt coco/annotations/instances_val2017.json --images-dir coco/val2017 \\
      --checkpoint tap_vit_l_v1_1.pkl --detections coco_instances_val2017_vitdet_h_cascade.json
  tapkit eval semseg --dataset ade150 --root datasets --checkpoint san_vit_b_16.pth --tokenizer clip-b16
  tapkit eval semseg --dataset synthetic --root semseg_eval          (the packaged SAN)
  torchrun --nproc_per_node 8 -m tapkit.cli.main eval caption ...   (one slice of the images per GPU)

Rerunning a command resumes from the predictions saved under --output-dir.
"""


# Ranks wait for the slowest one before rank 0 scores; a long evaluation can leave one
# rank waiting for hours (e.g. after resuming an uneven partial run).
EVAL_BARRIER_TIMEOUT = timedelta(hours=24)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="run a benchmark of the paper: caption, classify, segment, or semseg (open-vocabulary semantic segmentation)",
        description="Evaluate a TAP model on the paper's benchmarks with the standard metric tools.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    benchmarks = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)

    cap = benchmarks.add_parser(
        "caption",
        help="region captioning with GT boxes as prompts (BLEU, METEOR, ROUGE-L, CIDEr, SPICE)",
        description="Caption every GT box of a VG-style COCO JSON and score with pycocoevalcap (needs Java).",
    )
    _add_common(cap, images_required=False)
    cap.add_argument("--predictions", metavar="PRED.json", help='score this file ([{"image_id", "id" or "bbox", "caption"}]) instead of running a model')
    cap.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)} (default: all; SPICE only if its jars are installed)")
    add_model_options(cap)
    cap.set_defaults(func=run)

    cls = benchmarks.add_parser(
        "classify",
        help="zero-shot instance classification with GT boxes as prompts (box AP; LVIS: APr/APc/APf)",
        description="Classify every GT box against the dataset's concept file (--concepts, in the file's category order) and score box AP.",
    )
    _add_common(cls)
    cls.add_argument("--max-dets", type=int, default=300, metavar="N", help="detections kept per image (default: 300, as the reference)")
    cls.add_argument("--protocol", choices=("auto", "coco", "lvis"), default="auto", help="AP rules (default: lvis when the file has LVIS fields)")
    cls.add_argument(
        "--score",
        choices=classify.SCORE_MODES,
        default="reference",
        help="detection score: 'reference' reproduces the published numbers (see docs/evaluation.md); 'box-iou' uses each box's own predicted IoU",
    )
    add_model_options(cls)
    cls.set_defaults(func=run)

    seg = benchmarks.add_parser(
        "segment",
        help="mask AP from box prompts, or mIoU from clicks sampled in GT masks",
        description="Segment with box prompts (detections or GT boxes) and score mask AP, or with clicks drawn from GT masks and score mIoU.",
    )
    _add_common(seg)
    prompts = seg.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--detections", metavar="DETS.json", help="box prompts from a COCO results file (mask AP)")
    prompts.add_argument("--gt-boxes", action="store_true", help="box prompts from the GT boxes (mask AP)")
    prompts.add_argument("--points", metavar="K[,K...]", help="K foreground clicks per GT instance, e.g. 1 or 1,3,5 (mIoU)")
    seg.add_argument("--protocol", choices=("auto", "coco", "lvis"), default="auto", help="AP rules (default: lvis when the file has LVIS fields)")
    seg.add_argument("--seed", type=int, default=0, help="seed of the click sampling (default: 0)")
    add_model_options(seg)
    seg.set_defaults(func=run)

    sem = benchmarks.add_parser(
        "semseg",
        help="open-vocabulary semantic segmentation: mIoU, fwIoU, mACC, pACC (ADE, Pascal Context, VOC, COCO-Stuff, synthetic)",
        description="Label every image of a prepared dataset with its own class names as the vocabulary and score "
                    "the label maps as detectron2's SemSegEvaluator does (docs/segment.md).",
    )
    sem.add_argument("--dataset", required=True, choices=DATASETS, help="which prepared layout --root holds")
    sem.add_argument("--root", required=True, metavar="DIR", help="the datasets root (as DETECTRON2_DATASETS), or the "
                     "synthetic split's folder (tapkit data synth-semseg)")
    sem.add_argument("--classes-file", metavar="FILE", help="class names, one per line in label order (default: the dataset's own file)")
    sem.add_argument("--output-dir", metavar="DIR", help="report, per-class table and resumable shards (default: tapkit-eval/semseg-DATASET)")
    sem.add_argument("--limit", type=int, metavar="N", help="only the first N images (a quick look)")
    sem.add_argument("--fresh", action="store_true", help="discard predictions saved by an earlier run instead of resuming")
    add_segmenter_options(sem)
    sem.set_defaults(func=run_semseg)


def _add_common(p: argparse.ArgumentParser, images_required: bool = True) -> None:
    group = p.add_argument_group("data and run")
    group.add_argument("--gt", required=True, metavar="GT.json", help="COCO-style annotation file")
    group.add_argument("--images-dir", required=images_required, metavar="DIR", help="folder of the images")
    group.add_argument("--output-dir", metavar="DIR", help="report, predictions and resumable shards (default: tapkit-eval/BENCHMARK)")
    group.add_argument("--limit", type=int, metavar="N", help="only the first N images (a quick look)")
    group.add_argument("--fresh", action="store_true", help="discard predictions saved by an earlier run instead of resuming")
    group.add_argument("--max-batch", type=int, default=256, metavar="N", help="prompts decoded together (default: 256)")


def _parse_points(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--points takes click counts like 1 or 1,3,5, got '{text}'") from None
    if not counts or min(counts) < 1:
        raise UserError(f"--points counts must be >= 1, got '{text}'")
    return tuple(sorted(set(counts)))


def _setup(args: argparse.Namespace) -> EvalSetup:
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    if args.max_batch < 1:
        raise UserError("--max-batch must be >= 1")
    # cheap checks before a large model is loaded; the loaders check the contents
    inputs = [("annotation file", args.gt), ("predictions file", getattr(args, "predictions", None)), ("detections file", getattr(args, "detections", None))]
    for what, path in inputs:
        if path is not None and not Path(path).is_file():
            raise UserError(f"{what} not found: {path}")
    if args.images_dir is not None and not Path(args.images_dir).is_dir():
        raise UserError(f"images folder not found: {args.images_dir}")
    output = Path(args.output_dir) if args.output_dir else Path("tapkit-eval") / args.benchmark
    images = Path(args.images_dir) if args.images_dir else None
    return EvalSetup(Path(args.gt), images, output, args.limit, args.fresh, args.max_batch)


def _predictor(args: argparse.Namespace, ctx: Runtime) -> tuple[Predictor, dict]:
    model = model_from_args(argparse.Namespace(**{**vars(args), "device": str(ctx.device)}))
    files = default_model_files() if args.checkpoint is None else None
    info = describe_model(
        model,
        args.checkpoint or files.checkpoint,
        args.tokenizer or (files.tokenizer if files else None),
        args.concepts or (files.concepts if files else None),
    )
    return Predictor(model, max_batch=args.max_batch), info


def _evaluate(args: argparse.Namespace, setup: EvalSetup, ctx: Runtime) -> EvalReport | None:
    predictor, info = _predictor(args, ctx)
    if args.benchmark == "caption":
        return caption.evaluate(setup, predictor, info, ctx, parse_metrics(args.metrics))
    if args.benchmark == "classify":
        return classify.evaluate(setup, predictor, info, ctx, args.max_dets, args.protocol, args.score)
    if args.points:
        return segment.evaluate_points(setup, predictor, info, ctx, _parse_points(args.points), args.seed)
    return segment.evaluate_masks(setup, predictor, info, ctx, args.detections, args.protocol)


def run(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if args.benchmark == "caption":
        metrics = parse_metrics(args.metrics)
        require_pycocoevalcap()
        require_java()  # before hours of inference, not after
        if args.predictions:
            report = caption.score_predictions(setup, Path(args.predictions), metrics)
            return _finish(report, setup)
        if setup.images_dir is None:
            raise UserError("--images-dir is needed to run a model (or give --predictions)")
    elif args.benchmark == "segment" and args.points:
        _parse_points(args.points)
    ctx = init_runtime(args.device, EVAL_BARRIER_TIMEOUT)
    try:
        report = _evaluate(args, setup, ctx)
    finally:
        ctx.close()
    return _finish(report, setup) if report is not None else 0


def run_semseg(args: argparse.Namespace) -> int:
    from tapkit.evaluation import semseg
    from tapkit.evaluation.report import file_summary

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    dataset = open_dataset(args.dataset, args.root, "val", args.classes_file)
    output = Path(args.output_dir) if args.output_dir else Path("tapkit-eval") / f"semseg-{args.dataset}"
    setup = semseg.SemsegSetup(dataset, output, args.limit, args.fresh)
    ctx = init_runtime(args.device, EVAL_BARRIER_TIMEOUT)
    try:
        segmenter = segmenter_from_args(argparse.Namespace(**{**vars(args), "device": str(ctx.device)}))
        info = {"family": segmenter.model.family, "checkpoint": file_summary(args.checkpoint or "packaged SAN"),
                "dtype": str(segmenter.dtype).replace("torch.", "")}
        report = semseg.evaluate(setup, segmenter, info, ctx)
    finally:
        ctx.close()
    if report is None:
        return 0
    report.write(setup.report_path)
    print(semseg.per_class_table(report))
    print(report.table())
    print(f"report: {setup.report_path}")
    return 0


def _finish(report: EvalReport, setup: EvalSetup) -> int:
    report.write(setup.report_path)
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {setup.report_path}")
    return 0
