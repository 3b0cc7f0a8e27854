"""Region captioning with ground-truth boxes as prompts (the GRiT/TAP Visual Genome test split).

Protocol of the reference (scripts/eval_cap.py): every annotation box [x, y, w, h] of
an image becomes a box prompt (corners x, y and x + w, y + h; mask 0's semantic token),
captioned greedily; region j of image i is scored under the key "i_region_j" with
its one reference caption, in file order, by pycocoevalcap."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tapkit.evaluation.caption_metrics import DEFAULT_METRICS, score_captions
from tapkit.evaluation.data import DataError, GroundTruth, ImageItem, load_ground_truth, read_json, select_images, xywh_to_xyxy
from tapkit.evaluation.prompting import decode_in_batches
from tapkit.evaluation.report import EvalReport
from tapkit.evaluation.runner import InferFn, run_images
from tapkit.evaluation.setup import EvalSetup
from tapkit.evaluation.store import PredictionStore
from tapkit.errors import UserError
from tapkit.predictor.predictor import Predictor
from tapkit.utils.atomic import write_text_atomic
from tapkit.runtime import Runtime

PREDICTIONS_FILE = "predictions.json"


def region_key(image_id, index: int) -> str:
    return f"{image_id}_region_{index}"


def load_caption_gt(path) -> GroundTruth:
    return load_ground_truth(path, ann_keys=("bbox", "caption"))


def caption_infer(predictor: Predictor, gt: GroundTruth, max_batch: int) -> InferFn:
    """Per image: one caption per annotation box, in file order."""

    def infer(item: ImageItem, rgb) -> dict:
        anns = gt.anns_by_image[item.image_id]
        predictor.set_image(rgb)
        prompts = predictor.model.protocol.box_prompts(xywh_to_xyxy([a["bbox"] for a in anns]))
        captions: list[str] = []
        for _, decoded in decode_in_batches(predictor, prompts, max_batch):
            captions += predictor.caption(decoded.sem_tokens)
        return {"captions": captions}

    return infer


def captions_from_predictions(gt: GroundTruth, predictions) -> dict:
    """Matches a predictions list [{"image_id", "id" or "bbox", "caption"}] to the
    annotations: by annotation id, or else by the box within the image (duplicate
    boxes take the predictions in order). Returns image id -> captions per annotation
    (None where there is no prediction)."""
    if not isinstance(predictions, list):
        raise DataError("a predictions file holds a JSON list of {\"image_id\", \"id\" or \"bbox\", \"caption\"}")
    where_id = {}
    where_box: dict = {}
    for image_id, anns in gt.anns_by_image.items():
        for j, ann in enumerate(anns):
            if "id" in ann:
                where_id[ann["id"]] = (image_id, j)
            where_box.setdefault((image_id, _box_key(ann["bbox"])), []).append(j)
    captions = {image_id: [None] * len(anns) for image_id, anns in gt.anns_by_image.items()}
    for n, pred in enumerate(predictions):
        if not isinstance(pred, dict) or not isinstance(pred.get("caption"), str):
            raise DataError(f"prediction {n} needs a string 'caption': {str(pred)[:120]}")
        if "id" in pred:
            if pred["id"] not in where_id:
                raise DataError(f"prediction {n}: no annotation has id {pred['id']!r}")
            image_id, j = where_id[pred["id"]]
        elif "bbox" in pred and "image_id" in pred:
            slots = [j for j in where_box.get((pred["image_id"], _box_key(pred["bbox"])), []) if captions[pred["image_id"]][j] is None]
            if not slots:
                raise DataError(f"prediction {n}: no annotation (left) in image {pred['image_id']!r} with bbox {pred['bbox']}")
            image_id, j = pred["image_id"], slots[0]
        else:
            raise DataError(f"prediction {n} needs 'id', or 'image_id' and 'bbox'")
        if captions[image_id][j] is not None:
            raise DataError(f"prediction {n}: annotation {j} of image {image_id!r} already has a caption")
        captions[image_id][j] = pred["caption"]
    return captions


def _box_key(bbox) -> tuple:
    try:
        return tuple(round(float(v), 2) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"a bbox is [x, y, w, h], got {bbox!r}") from None


def caption_pairs(gt: GroundTruth, image_ids: list, captions: dict) -> tuple[dict, dict]:
    """(references, candidates) keyed "image_region_j" in the order of `image_ids`."""
    refs, cands = {}, {}
    for image_id in image_ids:
        for j, (ann, caption) in enumerate(zip(gt.anns_by_image[image_id], captions[image_id])):
            key = region_key(image_id, j)
            refs[key] = [ann["caption"]]
            cands[key] = caption
    return refs, cands


def predictions_list(gt: GroundTruth, image_ids: list, captions: dict) -> list[dict]:
    """The predictions in the form `--predictions` reads back."""
    return [
        {"image_id": image_id, **({"id": ann["id"]} if "id" in ann else {}), "bbox": ann["bbox"], "caption": caption}
        for image_id in image_ids
        for ann, caption in zip(gt.anns_by_image[image_id], captions[image_id])
    ]


def _report(gt: GroundTruth, image_ids: list, captions: dict, metrics: tuple[str, ...], model: dict | None, setup: EvalSetup, settings: dict, timing: dict) -> EvalReport:
    refs, cands = caption_pairs(gt, image_ids, captions)
    start = time.perf_counter()
    scores = score_captions(refs, cands, metrics)
    timing["scoring_s"] = round(time.perf_counter() - start, 3)
    data = {
        "gt": str(setup.gt),
        "images_dir": str(setup.images_dir) if setup.images_dir else None,
        "images": len(image_ids),
        "images_in_gt": len(gt.images),
        "regions": len(cands),
    }
    return EvalReport("caption", scores.metrics, model or {}, data, settings, timing, scores.notes)


def evaluate(setup: EvalSetup, predictor: Predictor, model_info: dict, ctx: Runtime, metrics: tuple[str, ...] = DEFAULT_METRICS) -> EvalReport | None:
    """Captions every GT box, sharded over ranks; rank 0 scores and returns the report."""
    if not predictor.model.can_caption:
        raise UserError("captioning needs a checkpoint with a text decoder and --tokenizer")
    gt = load_caption_gt(setup.gt)
    items = select_images(gt, setup.images_dir, setup.limit)
    work = [item for item in items if gt.anns_by_image.get(item.image_id)]
    model = predictor.model
    max_text_len = model.max_caption_tokens
    settings = {"prompts": "gt boxes (mask 0)", "max_text_len": max_text_len, "limit": setup.limit, "metrics": list(metrics)}
    run_key = {"benchmark": "caption", "model": model_info, **setup.data_key()}
    store = PredictionStore.open(setup.shard_dir, run_key, ctx, setup.fresh)
    run = run_images(work, caption_infer(predictor, gt, setup.max_batch), ctx, store, "caption")
    if not ctx.is_main:
        return None
    image_ids = [item.image_id for item in work]
    captions = {image_id: run.records[image_id]["captions"] for image_id in image_ids}
    for image_id in image_ids:
        if len(captions[image_id]) != len(gt.anns_by_image[image_id]):
            raise UserError(f"saved captions of image {image_id!r} do not match the annotations; pass --fresh")
    write_text_atomic(setup.output_dir / PREDICTIONS_FILE, json.dumps(predictions_list(gt, image_ids, captions)) + "\n")
    return _report(gt, image_ids, captions, metrics, model_info, setup, settings, run.timing())


def score_predictions(setup: EvalSetup, predictions_path: Path, metrics: tuple[str, ...] = DEFAULT_METRICS) -> EvalReport:
    """Scores an existing predictions file without a model. The images scored are
    those with predictions (or the first `limit` images); each needs a caption for
    every annotation."""
    gt = load_caption_gt(setup.gt)
    captions = captions_from_predictions(gt, read_json(predictions_path, "predictions file"))
    if setup.limit is not None:
        image_ids = [im["id"] for im in gt.images[: setup.limit] if gt.anns_by_image.get(im["id"])]
    else:
        image_ids = [im["id"] for im in gt.images if any(c is not None for c in captions.get(im["id"], []))]
    missing = [(i, j) for i in image_ids for j, c in enumerate(captions[i]) if c is None]
    if missing:
        i, j = missing[0]
        raise DataError(f"{len(missing)} regions of the scored images have no prediction (first: region {j} of image {i!r})")
    if not image_ids:
        raise DataError(f"no prediction in {predictions_path} matches an annotation of {setup.gt}")
    settings = {"predictions": str(predictions_path), "limit": setup.limit, "metrics": list(metrics)}
    return _report(gt, image_ids, captions, metrics, None, setup, settings, {})
