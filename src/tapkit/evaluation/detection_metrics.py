"""Box and mask AP with pycocotools: the COCO protocol as is, and the LVIS protocol
built on COCOeval.

The LVIS API (`lvis` 0.5.3, the last release) cannot run with NumPy >= 1.24 (it uses
the removed `np.float`) and pulls in OpenCV and matplotlib, so the LVIS rules are
implemented here on top of COCOeval, following `lvis.LVISEval` step by step:
- at most 300 detections per image, the highest scoring (a stable sort, as LVISResults);
- a detection counts only in images where its category is annotated as present or
  listed in `neg_category_ids`; elsewhere it is dropped;
- an unmatched detection of a category in the image's `not_exhaustive_category_ids`
  is ignored, not a false positive;
- AP over 10 IoU thresholds x 101 recall points, at most 300 detections, areas
  all/small/medium/large, plus APr / APc / APf over the rare / common / frequent
  categories (the `frequency` field).
Everything else (IoU, matching, interpolation) is COCOeval's, which LVISEval copies."""

from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

LVIS_MAX_DETS = 300
FREQUENCIES = ("r", "c", "f")
AREAS = ("all", "small", "medium", "large")


@contextlib.contextmanager
def _quiet():
    """pycocotools prints progress on stdout; keep the CLI's output to the table."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def coco_from_dataset(dataset: dict) -> COCO:
    """A pycocotools COCO object over an in-memory annotation dict (annotations get
    iscrowd = 0 where missing, as LVIS files have none)."""
    data = dict(dataset)
    data["annotations"] = [ann if "iscrowd" in ann else {**ann, "iscrowd": 0} for ann in dataset["annotations"]]
    with _quiet():
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


def load_results(gt: COCO, results: list[dict]) -> COCO:
    """COCO.loadRes on copies of `results`; an empty list gives an empty result set."""
    if not results:
        empty = COCO()
        empty.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]), "annotations": []}
        with _quiet():
            empty.createIndex()
        return empty
    with _quiet():
        return gt.loadRes([dict(r) for r in results])


def limit_per_image(results: list[dict], max_dets: int) -> list[dict]:
    """The `max_dets` highest scoring results of each image (stable for ties), grouped
    by image in order of first appearance, as LVISResults does."""
    by_image: dict = defaultdict(list)
    for r in results:
        by_image[r["image_id"]].append(r)
    out = []
    for anns in by_image.values():
        if len(anns) > max_dets:
            anns = sorted(anns, key=lambda r: r["score"], reverse=True)[:max_dets]
        out += anns
    return out


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _percent(value: float) -> float | None:
    """COCOeval's -1 (no ground truth of that kind, e.g. no small objects) is no number:
    None (null in the report, n/a in the table), never -100."""
    return None if value < 0 else 100.0 * float(value)


def coco_ap(gt: COCO, results: list[dict], iou_type: str, image_ids: list | None = None) -> dict[str, float | None]:
    """The 12 COCO numbers (AP, AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) in percent;
    None where COCOeval has nothing to measure."""
    ev = COCOeval(gt, load_results(gt, results), iou_type)
    if image_ids is not None:
        ev.params.imgIds = sorted(image_ids)
    with _quiet():
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    return {n: _percent(v) for n, v in zip(names, ev.stats)}


class LvisEval(COCOeval):
    """COCOeval with LVIS's federated rules (see the module docstring)."""

    def __init__(self, gt: COCO, dt: COCO, iou_type: str):
        super().__init__(gt, dt, iou_type)
        self.params.maxDets = [LVIS_MAX_DETS]
        images = gt.dataset["images"]
        self.negative = {im["id"]: set(im.get("neg_category_ids", ())) for im in images}
        self.not_exhaustive = {im["id"]: set(im.get("not_exhaustive_category_ids", ())) for im in images}

    def _prepare(self):
        super()._prepare()
        present = defaultdict(set)
        for image_id, category_id in self._gts:
            present[image_id].add(category_id)
        for image_id, category_id in list(self._dts):
            if category_id not in present[image_id] and category_id not in self.negative[image_id]:
                del self._dts[image_id, category_id]

    def evaluateImg(self, imgId, catId, aRng, maxDet):
        result = super().evaluateImg(imgId, catId, aRng, maxDet)
        if result is not None and catId in self.not_exhaustive[imgId]:
            result["dtIgnore"] = np.logical_or(result["dtIgnore"], result["dtMatches"] == 0)
        return result

    def lvis_summary(self) -> dict[str, float | None]:
        """LVISEval's numbers (AP, AP50, AP75, APs/m/l, APr/c/f, AR@300, ARs/m/l@300) in percent;
        None where there is nothing to measure (LVISEval's -1)."""
        precision = self.eval["precision"][..., 0]  # (T, R, K, A), one max-dets setting
        recall = self.eval["recall"][..., 0]  # (T, K, A)
        thresholds = self.params.iouThrs
        categories = self.cocoGt.loadCats(self.params.catIds)
        groups = {f: [k for k, c in enumerate(categories) if c.get("frequency") == f] for f in FREQUENCIES}
        out = {
            "AP": _mean_valid(precision[..., 0]),
            "AP50": _mean_valid(precision[np.where(thresholds == 0.5)[0], ..., 0]),
            "AP75": _mean_valid(precision[np.where(thresholds == 0.75)[0], ..., 0]),
            "APs": _mean_valid(precision[..., 1]),
            "APm": _mean_valid(precision[..., 2]),
            "APl": _mean_valid(precision[..., 3]),
        }
        for f in FREQUENCIES:
            out[f"AP{f}"] = _mean_valid(precision[:, :, groups[f], 0])
        out[f"AR@{LVIS_MAX_DETS}"] = _mean_valid(recall[..., 0])
        for a, name in enumerate(AREAS[1:], start=1):
            out[f"AR{name[0]}@{LVIS_MAX_DETS}"] = _mean_valid(recall[..., a])
        return {k: _percent(v) for k, v in out.items()}


def lvis_ap(gt: COCO, results: list[dict], iou_type: str, image_ids: list | None = None) -> dict[str, float | None]:
    """AP by the LVIS protocol, in percent."""
    ev = LvisEval(gt, load_results(gt, limit_per_image(results, LVIS_MAX_DETS)), iou_type)
    if image_ids is not None:
        ev.params.imgIds = sorted(image_ids)
    with _quiet():
        ev.evaluate()
        ev.accumulate()
    return ev.lvis_summary()


def detection_ap(gt: COCO, results: list[dict], iou_type: str, protocol: str, image_ids: list | None = None) -> dict[str, float | None]:
    """`protocol` is "coco" or "lvis"; `iou_type` "bbox" or "segm"."""
    assert protocol in ("coco", "lvis") and iou_type in ("bbox", "segm")
    return (lvis_ap if protocol == "lvis" else coco_ap)(gt, results, iou_type, image_ids)
