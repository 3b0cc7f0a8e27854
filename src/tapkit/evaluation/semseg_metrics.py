"""Semantic-segmentation metrics as detectron2's SemSegEvaluator computes them: a
(C + 1) x (C + 1) confusion matrix [prediction, ground truth] whose last row / column
collect ignored pixels (ground truth = the ignore label); then per class IoU and
accuracy over classes present in the ground truth, mIoU, frequency-weighted IoU, mean
accuracy and pixel accuracy, in percent."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
    """(C + 1, C + 1) int64 counts of one image; gt values outside [0, C) other than the
    ignore label are errors."""
    gt = gt.astype(np.int64).ravel().copy()
    pred = pred.astype(np.int64).ravel()
    ignored = gt == ignore_label
    if np.any((gt[~ignored] < 0) | (gt[~ignored] >= num_classes)):
        raise ValueError(f"label values outside 0..{num_classes - 1} (and not the ignore label {ignore_label})")
    gt[ignored] = num_classes
    return np.bincount((num_classes + 1) * pred + gt, minlength=(num_classes + 1) ** 2).reshape(num_classes + 1, num_classes + 1)


def sparse(conf: np.ndarray) -> list[list[int]]:
    """Non-zero entries as [pred, gt, count] (what a prediction shard stores per image)."""
    p, g = np.nonzero(conf)
    return [[int(a), int(b), int(conf[a, b])] for a, b in zip(p, g)]


def dense(entries: list[list[int]], num_classes: int) -> np.ndarray:
    conf = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for p, g, n in entries:
        conf[p, g] += n
    return conf


@dataclass
class SemsegScores:
    """Percentages; per_class_iou / per_class_acc are NaN for classes absent from the GT."""

    miou: float
    fwiou: float
    macc: float
    pacc: float
    per_class_iou: np.ndarray
    per_class_acc: np.ndarray

    def subset_miou(self, classes: list[int]) -> float | None:
        """mIoU over `classes` that occur in the ground truth (None if none does)."""
        values = self.per_class_iou[classes]
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) else None


def scores(conf: np.ndarray) -> SemsegScores:
    n = conf.shape[0] - 1
    acc, iou = np.full(n, np.nan), np.full(n, np.nan)
    tp = conf.diagonal()[:-1].astype(np.float64)
    pos_gt = conf[:-1, :-1].sum(0).astype(np.float64)
    pos_pred = conf[:-1, :-1].sum(1).astype(np.float64)
    weights = pos_gt / max(pos_gt.sum(), 1)
    acc_valid = pos_gt > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    union = pos_gt + pos_pred - tp
    iou_valid = acc_valid & (union > 0)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    macc = acc[acc_valid].sum() / max(acc_valid.sum(), 1)
    miou = iou[iou_valid].sum() / max(iou_valid.sum(), 1)
    fwiou = (iou[iou_valid] * weights[iou_valid]).sum()
    pacc = tp.sum() / max(pos_gt.sum(), 1)
    return SemsegScores(100 * miou, 100 * fwiou, 100 * macc, 100 * pacc, 100 * iou, 100 * acc)
