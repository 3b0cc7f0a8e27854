"""Promptable segmentation: mask AP from box prompts, and mIoU from clicks.

Mask AP follows the reference (scripts/eval_seg.py): every detection box of a COCO
results file (or every non-crowd GT box) becomes a box prompt (mask 0); the mask,
upscaled to the image and thresholded at 0, keeps the detection's category and
score; AP by COCOeval (COCO) or the LVIS rules (LVIS).

Click mIoU (not in the reference): for every non-crowd GT instance, K foreground
clicks are drawn uniformly from its mask's pixels (seeded by the annotation id, so
any sharding gives the same clicks; the first K of one draw for every K asked);
the predictor's routing picks the best of masks 1-3; the score is the mean IoU
with the GT mask over instances."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils

from tapkit.errors import UserError
from tapkit.evaluation.data import DataError, GroundTruth, ImageItem, load_ground_truth, read_json, select_images, xywh_to_xyxy
from tapkit.evaluation.detection_metrics import coco_from_dataset, detection_ap
from tapkit.evaluation.prompting import decode_in_batches
from tapkit.evaluation.report import EvalReport, file_summary
from tapkit.evaluation.runner import InferFn, run_images
from tapkit.evaluation.setup import EvalSetup
from tapkit.evaluation.store import PredictionStore
from tapkit.predictor.predictor import Predictor
from tapkit.utils.atomic import write_with
from tapkit.utils.rle import decode_rle, encode_rle
from tapkit.runtime import Runtime

SEGMENTATIONS_FILE = "segmentations.json"


# ---------------------------------------------------------------- box prompts -> mask AP


def load_detections(path, gt: GroundTruth) -> dict:
    """A COCO results file (a list, or a dict with "annotations") -> image id ->
    list of (bbox [x, y, w, h], category id, score), in file order."""
    data = read_json(path, "detections file")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise DataError(f"{path} is not a COCO results file (a list of {{image_id, category_id, bbox, score}})")
    by_image: dict = defaultdict(list)
    for n, det in enumerate(data):
        if not isinstance(det, dict) or any(k not in det for k in ("image_id", "category_id", "bbox", "score")):
            raise DataError(f"{path}: detection {n} needs image_id, category_id, bbox and score: {str(det)[:120]}")
        by_image[det["image_id"]].append((det["bbox"], det["category_id"], det["score"]))
    known = {im["id"] for im in gt.images}
    if by_image and not known & set(by_image):
        raise DataError(f"no detection in {path} belongs to an image of {gt.path}")
    return dict(by_image)


def gt_box_prompts(gt: GroundTruth) -> dict:
    """Non-crowd GT boxes as detections of score 1."""
    return {
        image_id: [(a["bbox"], a["category_id"], 1.0) for a in anns if not a.get("iscrowd", 0)]
        for image_id, anns in gt.anns_by_image.items()
    }


def mask_infer(predictor: Predictor, detections: dict, max_batch: int) -> InferFn:
    """Per image: a mask (COCO RLE) per detection box; category and score kept as the
    reference passes them (through float32)."""

    def infer(item: ImageItem, rgb) -> dict:
        dets = detections[item.image_id]
        boxes = xywh_to_xyxy([d[0] for d in dets])
        predictor.set_image(rgb)
        masks: list[dict] = []
        for _, decoded in decode_in_batches(predictor, predictor.model.protocol.box_prompts(boxes), max_batch):
            masks += [encode_rle(m) for m in predictor.upscale_masks(decoded.mask_logits)]
        return {
            "category_ids": [int(np.float32(d[1])) for d in dets],
            "scores": [float(np.float32(d[2])) for d in dets],
            "masks": masks,
        }

    return infer


def segmentation_results(image_ids: list, records: dict) -> list[dict]:
    """COCO segmentation results in image order, then detection order."""
    return [
        {"image_id": image_id, "category_id": c, "segmentation": m, "score": s}
        for image_id in image_ids
        for c, s, m in zip(records[image_id]["category_ids"], records[image_id]["scores"], records[image_id]["masks"])
    ]


def evaluate_masks(
    setup: EvalSetup,
    predictor: Predictor,
    model_info: dict,
    ctx: Runtime,
    detections_path=None,
    protocol: str = "auto",
) -> EvalReport | None:
    """Mask AP with box prompts from `detections_path` (COCO results) or, if None,
    from the GT boxes."""
    gt = load_ground_truth(setup.gt, ann_keys=("bbox", "category_id", "segmentation"))
    protocol = gt.ap_protocol(protocol)
    detections = load_detections(detections_path, gt) if detections_path else gt_box_prompts(gt)
    items = select_images(gt, setup.images_dir, setup.limit)
    work = [item for item in items if detections.get(item.image_id)]
    source = "detections" if detections_path else "gt boxes"
    settings = {"prompts": f"{source} (mask 0)", "detections": str(detections_path) if detections_path else None, "protocol": protocol, "limit": setup.limit}
    run_key = {"benchmark": "segment-boxes", "model": model_info, "detections": file_summary(detections_path), **setup.data_key()}
    store = PredictionStore.open(setup.shard_dir, run_key, ctx, setup.fresh)
    run = run_images(work, mask_infer(predictor, detections, setup.max_batch), ctx, store, "segment")
    if not ctx.is_main:
        return None
    results = segmentation_results([item.image_id for item in work], run.records)
    write_with(setup.output_dir / SEGMENTATIONS_FILE, lambda tmp: tmp.write_text(json.dumps(results)))
    start = time.perf_counter()
    metrics = detection_ap(coco_from_dataset(gt.dataset), results, "segm", protocol, [item.image_id for item in items])
    timing = run.timing(time.perf_counter() - start)
    data = {"gt": str(setup.gt), "images_dir": str(setup.images_dir), "images": len(items), "images_in_gt": len(gt.images), "prompts": len(results)}
    return EvalReport("segment", metrics, model_info, data, settings, timing)


# ---------------------------------------------------------------- clicks -> mIoU


def gt_mask(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, or RLE with list or string counts) -> (H, W) bool."""
    if isinstance(segmentation, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))).astype(bool)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return decode_rle(segmentation)
    raise DataError(f"unsupported segmentation: {str(segmentation)[:80]}")


def sample_clicks(mask: np.ndarray, count: int, seed: int, ann_id: int) -> np.ndarray:
    """`count` (x, y) pixel positions drawn uniformly from the mask, without
    replacement unless the mask is smaller than `count`; (count, 2) float32."""
    ys, xs = np.nonzero(mask)
    rng = np.random.default_rng([seed, ann_id])
    pick = rng.choice(len(ys), size=count, replace=len(ys) < count)
    return np.stack([xs[pick], ys[pick]], axis=1).astype(np.float32)


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    union = np.logical_or(pred, target).sum()
    return float(np.logical_and(pred, target).sum() / union) if union else 0.0


def point_instances(gt: GroundTruth, image_id) -> list[dict]:
    """The GT instances clicked on: non-crowd, with a segmentation."""
    return [a for a in gt.anns_by_image.get(image_id, []) if not a.get("iscrowd", 0) and a.get("segmentation")]


def points_infer(predictor: Predictor, gt: GroundTruth, clicks: tuple[int, ...], seed: int, max_batch: int) -> InferFn:
    """Per image: the IoU of each instance's predicted mask for every click count."""
    image_info = {im["id"]: im for im in gt.images}

    def infer(item: ImageItem, rgb) -> dict:
        h, w = rgb.shape[:2]
        info = image_info[item.image_id]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise DataError(f"image {item.path} is {w}x{h} but the annotation file says {info.get('width')}x{info.get('height')}")
        anns = point_instances(gt, item.image_id)
        masks = [gt_mask(a["segmentation"], h, w) for a in anns]
        keep = [i for i, m in enumerate(masks) if m.any()]
        anns, masks = [anns[i] for i in keep], [masks[i] for i in keep]
        predictor.set_image(rgb)
        points = np.stack([sample_clicks(m, max(clicks), seed, int(a["id"])) for a, m in zip(anns, masks)]) if anns else None
        ious: dict[str, list[float]] = {}
        for k in clicks:
            ious[str(k)] = []
            if points is None:
                continue
            for rows, decoded in decode_in_batches(predictor, predictor.model.protocol.click_prompts(points[:, :k]), max_batch):
                pred = predictor.upscale_masks(decoded.mask_logits)
                ious[str(k)] += [mask_iou(p, t) for p, t in zip(pred, masks[rows])]
        return {"ids": [a["id"] for a in anns], "ious": ious}

    return infer


def evaluate_points(
    setup: EvalSetup,
    predictor: Predictor,
    model_info: dict,
    ctx: Runtime,
    clicks: tuple[int, ...] = (1,),
    seed: int = 0,
) -> EvalReport | None:
    """mIoU over the GT instances for each number of clicks in `clicks`."""
    if not clicks or min(clicks) < 1:
        raise UserError("click counts must be >= 1")
    gt = load_ground_truth(setup.gt, ann_keys=("id", "segmentation"))
    items = select_images(gt, setup.images_dir, setup.limit)
    work = [item for item in items if point_instances(gt, item.image_id)]
    settings = {"prompts": "foreground clicks drawn uniformly from GT masks (best of masks 1-3)", "clicks": list(clicks), "seed": seed, "limit": setup.limit}
    run_key = {"benchmark": "segment-points", "model": model_info, "clicks": list(clicks), "seed": seed, **setup.data_key()}
    store = PredictionStore.open(setup.shard_dir, run_key, ctx, setup.fresh)
    run = run_images(work, points_infer(predictor, gt, clicks, seed, setup.max_batch), ctx, store, "segment")
    if not ctx.is_main:
        return None
    start = time.perf_counter()
    ious = {k: [v for item in work for v in run.records[item.image_id]["ious"][str(k)]] for k in clicks}
    metrics = {f"mIoU@{k}": 100.0 * float(np.mean(v)) if v else 0.0 for k, v in ious.items()}
    data = {"gt": str(setup.gt), "images_dir": str(setup.images_dir), "images": len(items), "images_in_gt": len(gt.images), "instances": len(ious[clicks[0]])}
    return EvalReport("segment", metrics, model_info, data, settings, run.timing(time.perf_counter() - start))

