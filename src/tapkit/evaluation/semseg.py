"""`tapkit eval semseg`: open-vocabulary semantic segmentation of a prepared dataset,
each with its own class names as the vocabulary; per-image confusion entries in the
resumable shards, scored on rank 0 with detectron2's SemSegEvaluator metrics. The
synthetic split also reports mIoU over its seen and its unseen classes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tapkit.data.semseg import SemsegDataset, read_label_map
from tapkit.evaluation.data import ImageItem
from tapkit.evaluation.report import EvalReport
from tapkit.evaluation.runner import run_images
from tapkit.evaluation.semseg_metrics import confusion, dense, scores, sparse
from tapkit.evaluation.store import PredictionStore
from tapkit.runtime import Runtime
from tapkit.segmenter.segmenter import Segmenter


@dataclass(frozen=True)
class SemsegSetup:
    dataset: SemsegDataset
    output_dir: Path
    limit: int | None = None
    fresh: bool = False

    @property
    def report_path(self) -> Path:
        return self.output_dir / "report.json"


def evaluate(setup: SemsegSetup, segmenter: Segmenter, model_info: dict, ctx: Runtime) -> EvalReport | None:
    ds = setup.dataset
    pairs = ds.samples[: setup.limit] if setup.limit else ds.samples
    items = [ImageItem(i, image.stem, image) for i, (image, _) in enumerate(pairs)]
    labels = {image.stem: label for image, label in pairs}
    key = {"benchmark": "semseg", "dataset": ds.name, "classes": ds.classes, "model": model_info,
           "input_size": segmenter.input_size, "limit": setup.limit}
    store = PredictionStore.open(setup.output_dir / "shards", key, ctx, setup.fresh)
    n = len(ds.classes)

    def infer(item: ImageItem, rgb: np.ndarray) -> dict:
        gt = read_label_map(labels[item.image_id])
        if gt.shape != rgb.shape[:2]:
            raise ValueError(f"label map {labels[item.image_id]} is {gt.shape}, its image {rgb.shape[:2]}")
        pred = segmenter.segment(rgb, ds.classes).label_map
        return {"confusion": sparse(confusion(pred, gt, n, ds.ignore_label))}

    run = run_images(items, infer, ctx, store, f"semseg[{ds.name}]")
    if not ctx.is_main:
        return None
    start = time.perf_counter()
    conf = sum((dense(r["confusion"], n) for r in run.records.values()), np.zeros((n + 1, n + 1), np.int64))
    s = scores(conf)
    metrics = {"mIoU": s.miou, "fwIoU": s.fwiou, "mACC": s.macc, "pACC": s.pacc}
    if ds.unseen:
        unseen = [ds.classes.index(c) for c in ds.unseen]
        seen = [i for i in range(n) if i not in unseen]
        metrics["mIoU_seen"] = s.subset_miou(seen)
        metrics["mIoU_unseen"] = s.subset_miou(unseen)
    per_class = {c: {"IoU": _num(s.per_class_iou[i]), "ACC": _num(s.per_class_acc[i])} for i, c in enumerate(ds.classes)}
    data = {"dataset": ds.name, "images": len(items), "classes": n, "ignore_label": ds.ignore_label,
            "unseen": list(ds.unseen), "per_class": per_class}
    return EvalReport("semseg", metrics, model_info, data, {"input_size": segmenter.input_size},
                      run.timing(time.perf_counter() - start))


def _num(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def per_class_table(report: EvalReport) -> str:
    rows = [(c, v["IoU"], v["ACC"]) for c, v in report.data["per_class"].items()]
    width = max(len("class"), *(len(c) for c, _, _ in rows))
    fmt = lambda v: "   n/a" if v is None else f"{v:6.1f}"
    lines = [f"{'class':<{width}}     IoU     ACC"] + [f"{c:<{width}}  {fmt(i)}  {fmt(a)}" for c, i, a in rows]
    return "\n".join(lines)
