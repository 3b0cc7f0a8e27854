"""Zero-shot recognition of annotated regions by a CLIP: each region's square crop
(`tapkit.data.crops.square_crop`) against the text embeddings of every name (the mean
over prompt templates, as concept files are built). For '<colour> <shape>' names the
colour and shape words are also scored apart."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from tapkit.data.crops import EVAL_MARGIN, square_crop
from tapkit.data.records import ImageRecord, SkipCounter, load_rgb
from tapkit.data.text_encoders import DEFAULT_TEMPLATES, ClipText, concept_weights


@dataclass
class ZeroShotReport:
    images: int
    crops: int
    top1: float
    colour_right: float  # the first word of the predicted name is right
    shape_right: float  # the rest of the predicted name is right
    names: int
    per_name_top1: dict[str, float] = field(default_factory=dict)
    per_name_crops: dict[str, int] = field(default_factory=dict)
    skipped_images: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def zero_shot_crops(clip, records: list[ImageRecord], names: list[str], templates=DEFAULT_TEMPLATES,
                    margin: float = EVAL_MARGIN, progress: bool = True) -> ZeroShotReport:
    """Regions whose `concept` is one of `names` are classified among all of `names`."""
    from tqdm import tqdm

    weights = torch.from_numpy(concept_weights(names, ClipText(clip), tuple(templates)))
    index = {n: i for i, n in enumerate(names)}
    truth, predicted, skips, images = [], [], SkipCounter(), 0
    for record in tqdm(records, desc="zero-shot", disable=not progress, unit="img"):
        regions = [r for r in record.regions if r.concept in index]
        if not regions:
            continue
        rgb = load_rgb(record.path, skips)
        if rgb is None:
            continue
        images += 1
        crops = [np.ascontiguousarray(square_crop(rgb, r.bbox, margin)) for r in regions]
        logits = clip.encode_image(crops).cpu() @ weights
        predicted += logits.argmax(1).tolist()
        truth += [index[r.concept] for r in regions]
    truth_names, pred_names = [names[i] for i in truth], [names[i] for i in predicted]
    right = [t == p for t, p in zip(truth_names, pred_names)]
    colour = [t.split(" ", 1)[0] == p.split(" ", 1)[0] for t, p in zip(truth_names, pred_names)]
    shape = [t.split(" ", 1)[-1] == p.split(" ", 1)[-1] for t, p in zip(truth_names, pred_names)]
    per_name, counts = {}, {}
    for name in names:
        hits = [r for t, r in zip(truth_names, right) if t == name]
        if hits:
            per_name[name], counts[name] = float(np.mean(hits)), len(hits)
    mean = (lambda xs: float(np.mean(xs)) if xs else 0.0)
    return ZeroShotReport(images, len(right), mean(right), mean(colour), mean(shape), len(names), per_name, counts,
                          skips.total)
