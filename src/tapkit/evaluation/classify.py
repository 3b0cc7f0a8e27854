"""Zero-shot instance classification with ground-truth boxes as prompts, scored as box AP.

Protocol of the reference (scripts/eval_cls.py): every annotation box becomes a box
prompt (mask 0); its concept embedding is classified against the dataset's own
concept file (column i = the i-th category of the annotation file). Every class with
probability > 0.001 gives a detection on the GT box, scored from the probability and
the predicted IoU (see `boxes_to_detections` for the reference's exact rule); per
class, NMS at IoU 0.5; per image the detections scoring below the `max_dets`-th best
are dropped. Box AP by COCOeval
(COCO) or the LVIS rules (LVIS: AP, APr, APc, APf)."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np
import torch

from tapkit.errors import UserError
from tapkit.evaluation.data import GroundTruth, ImageItem, load_ground_truth, select_images, xywh_to_xyxy
from tapkit.evaluation.detection_metrics import coco_from_dataset, detection_ap
from tapkit.evaluation.prompting import decode_in_batches
from tapkit.evaluation.report import EvalReport
from tapkit.evaluation.runner import InferFn, run_images
from tapkit.evaluation.setup import EvalSetup
from tapkit.evaluation.store import PredictionStore
from tapkit.models.tap.concepts import ConceptVocabulary
from tapkit.predictor.predictor import Predictor
from tapkit.utils.atomic import write_with
from tapkit.runtime import Runtime

MIN_PROB = 0.001
NMS_IOU = 0.5
SCORE_MODES = ("reference", "box-iou")
DETECTIONS_FILE = "detections.json"


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression as torchvision.ops.nms: boxes (N, 4) [x1, y1, x2, y2],
    a box is dropped when its IoU with a kept higher-scoring box exceeds the threshold.
    Returns kept indices, highest score first (ties keep input order)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for pos, i in enumerate(order):
            if suppressed[i]:
                continue
            keep.append(i)
            rest = order[pos + 1 :]
            w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
            h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
            inter = w * h
            suppressed[rest[inter / (areas[i] + areas[rest] - inter) > iou_threshold]] = True
    return np.array(keep, dtype=np.int64)


def boxes_to_detections(boxes: np.ndarray, probs: np.ndarray, iou: np.ndarray, max_dets: int, score: str = "reference") -> list[list[float]]:
    """Class probabilities of prompted boxes -> detections.

    boxes: (N, 4) float32 xyxy; probs: (N, C) float32; iou: (N,) float32 predicted IoU.
    score "box-iou": sqrt(p x clip(IoU of the same box)). score "reference": what the
    reference computes (a NumPy broadcast turns its per-box product into an (M, M)
    matrix): the score is sqrt(p x clip(IoU of the image's last box with any p > 0.001)),
    and NMS ranks by sqrt(p x clip(IoU of the first such box)); the published numbers
    come from this. Returns [x1, y1, x2, y2, class index, score] rows grouped by class
    (ascending), NMS order within a class. `max_dets` <= 0 keeps all."""
    assert score in SCORE_MODES
    box_ind, cls_ind = np.nonzero(probs > MIN_PROB)
    if len(box_ind) == 0:
        return []
    p = probs[box_ind, cls_ind].astype(np.float32)
    clipped = np.clip(iou.astype(np.float32), 0, 1)
    if score == "reference":
        ranks, scores = np.sqrt(p * clipped[box_ind[0]]), np.sqrt(p * clipped[box_ind[-1]])
    else:
        ranks = scores = np.sqrt(p * clipped[box_ind])
    per_class = []
    for c in np.unique(cls_ind):
        rows = np.flatnonzero(cls_ind == c)
        per_class.append((int(c), rows[nms(boxes[box_ind[rows]], ranks[rows], NMS_IOU)]))
    if max_dets > 0:
        kept_scores = np.concatenate([scores[k] for _, k in per_class])
        if len(kept_scores) > max_dets:
            threshold = np.sort(kept_scores)[-max_dets]
            per_class = [(c, k[scores[k] >= threshold]) for c, k in per_class]
    return [[*map(float, boxes[box_ind[r]]), c, float(scores[r])] for c, keep in per_class for r in keep]


@torch.inference_mode()
def class_probabilities(vocab: ConceptVocabulary, sem_embeds: torch.Tensor) -> np.ndarray:
    return vocab.logits(sem_embeds).softmax(dim=-1).cpu().numpy()


def classify_infer(predictor: Predictor, gt: GroundTruth, max_batch: int, max_dets: int, score: str) -> InferFn:
    vocab = predictor.model.concepts

    def infer(item: ImageItem, rgb) -> dict:
        boxes = xywh_to_xyxy([a["bbox"] for a in gt.anns_by_image[item.image_id]])
        predictor.set_image(rgb)
        probs, iou = [], []
        for _, decoded in decode_in_batches(predictor, predictor.model.protocol.box_prompts(boxes), max_batch):
            probs.append(class_probabilities(vocab, decoded.sem_embeds))
            iou.append(decoded.iou.float().cpu().numpy())
        return {"detections": boxes_to_detections(boxes, np.concatenate(probs), np.concatenate(iou), max_dets, score)}

    return infer


def detections_to_results(image_ids: list, records: dict, category_ids: list) -> list[dict]:
    """COCO results, class-major then image order as the reference writes them
    (the order decides ties in COCOeval and in LVIS's per-image cap)."""
    by_class: dict = defaultdict(list)
    for image_id in image_ids:
        for x1, y1, x2, y2, c, score in records[image_id]["detections"]:
            by_class[int(c)].append({"image_id": image_id, "category_id": category_ids[int(c)], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return [r for c in sorted(by_class) for r in by_class[c]]


def check_vocabulary(vocab: ConceptVocabulary | None, gt: GroundTruth) -> list[str]:
    """The concept file must list the categories in the annotation file's order."""
    if vocab is None:
        raise UserError("classification needs --concepts: the dataset's concept file (e.g. lvis_1203.pkl, coco_80.pkl)")
    if len(vocab) != len(gt.categories):
        raise UserError(f"the concept file has {len(vocab)} concepts but {gt.path.name} has {len(gt.categories)} categories")
    differ = sum(_plain(n) != _plain(c.get("name", "")) for n, c in zip(vocab.names, gt.categories))
    if differ:
        return [f"{differ} of {len(vocab)} concept names differ from the category names; concepts are matched to categories by position"]
    return []


def _plain(name) -> str:
    """LVIS writes names as "aerosol_can", concept files may not."""
    return str(name).lower().replace("_", " ").strip()


def evaluate(
    setup: EvalSetup,
    predictor: Predictor,
    model_info: dict,
    ctx: Runtime,
    max_dets: int = 300,
    protocol: str = "auto",
    score: str = "reference",
) -> EvalReport | None:
    """Classifies every GT box, sharded over ranks; rank 0 scores and returns the report."""
    gt = load_ground_truth(setup.gt, ann_keys=("bbox", "category_id"))
    notes = check_vocabulary(predictor.model.concepts, gt)
    protocol = gt.ap_protocol(protocol)
    items = select_images(gt, setup.images_dir, setup.limit)
    work = [item for item in items if gt.anns_by_image.get(item.image_id)]
    settings = {"prompts": "gt boxes (mask 0)", "max_dets": max_dets, "min_prob": MIN_PROB, "nms_iou": NMS_IOU, "score": score, "protocol": protocol, "limit": setup.limit}
    run_key = {"benchmark": "classify", "model": model_info, "max_dets": max_dets, "score": score, **setup.data_key()}
    store = PredictionStore.open(setup.shard_dir, run_key, ctx, setup.fresh)
    run = run_images(work, classify_infer(predictor, gt, setup.max_batch, max_dets, score), ctx, store, "classify")
    if not ctx.is_main:
        return None
    results = detections_to_results([item.image_id for item in work], run.records, [c["id"] for c in gt.categories])
    write_with(setup.output_dir / DETECTIONS_FILE, lambda tmp: tmp.write_text(json.dumps(results)))
    start = time.perf_counter()
    metrics = detection_ap(coco_from_dataset(gt.dataset), results, "bbox", protocol, [item.image_id for item in items])
    timing = run.timing(time.perf_counter() - start)
    data = {"gt": str(setup.gt), "images_dir": str(setup.images_dir), "images": len(items), "images_in_gt": len(gt.images), "instances": sum(len(gt.anns_by_image.get(i.image_id, [])) for i in items), "detections": len(results)}
    return EvalReport("classify", metrics, model_info, data, settings, timing, notes)
