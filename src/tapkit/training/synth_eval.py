"""Evaluation on a synthetic world (or any SA-1B-format directory whose annotations
carry `concept` and `caption`): mask mIoU from one point and from the box, concept
top-1 accuracy, caption CIDEr-D, how often the caption names the right colour
and shape, and whole-caption truth (subject, related shape, direction; caption_truth.py). Runs the public inference path (`Predictor`), prompts in original pixels.
(The project's general evaluation suite lives in tapkit.evaluation; this is the
training-side check of the synthetic world's quality bar.)"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from tapkit.data.records import SkipCounter, load_rgb
from tapkit.data.sa1b import read_sa1b
from tapkit.data.synth import COLOURS, SHAPES
from tapkit.errors import UserError
from tapkit.models.tap.model import TapModel
from tapkit.predictor.predictor import Predictor
from tapkit.inputs.prompts import Prompt
from tapkit.training.caption_truth import caption_truth
from tapkit.training.cider import cider_d, tokenize


@dataclass
class SynthEvalReport:
    images: int
    regions: int
    point_miou: float
    box_miou: float
    concept_top1_box: float | None
    concept_top1_point: float | None
    cider_d_box: float | None
    cider_d_point: float | None
    colour_shape_right_box: float | None
    colour_shape_right_point: float | None
    colour_right_box: float | None  # the box caption's first colour word is right
    shape_right_box: float | None  # its first shape word is right
    skipped_images: int
    examples: list[dict] = field(default_factory=list)
    # Whole captions against the reference (CaptionTruth.to_dict(): subject, related,
    # direction, all_three, true, states_relation), box and point prompts.
    caption_truth_box: dict | None = None
    caption_truth_point: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def named(caption: str) -> tuple[str | None, str | None]:
    """The caption's first colour word and first shape word (None where it has none)."""
    words = tokenize(caption)
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    return (colours[0] if colours else None), (shapes[0] if shapes else None)


def evaluate_world(model: TapModel, sa1b_dir: str | os.PathLike, max_images: int | None = None, seed: int = 0,
                   progress: bool = True, examples: int = 8) -> SynthEvalReport:
    records = read_sa1b(sa1b_dir)[:max_images]
    predictor = Predictor(model)
    rng = np.random.default_rng(seed)
    skips = SkipCounter()
    point_ious, box_ious, concepts, refs, caps = [], [], {"box": [], "point": []}, [], {"box": [], "point": []}
    shown = []
    with_captions = model.text_decoder is not None and model.tokenizer is not None
    for record in tqdm(records, desc="eval", disable=not progress, unit="img"):
        rgb = load_rgb(record.path, skips)
        if rgb is None:
            continue
        h, w = rgb.shape[:2]
        predictor.set_image(rgb)
        prompts, truths = [], []
        for region in record.regions:
            mask = region.mask(h, w)
            ys, xs = np.nonzero(mask)
            k = rng.integers(len(ys))
            x, y, bw, bh = region.bbox
            prompts += [Prompt(points=[(float(xs[k]), float(ys[k]), 1)]), Prompt(box=(x, y, x + bw - 1, y + bh - 1))]
            truths.append((mask, region))
        out = predictor.predict(prompts, top_k=1, captions=with_captions, embeddings=False)
        for i, (mask, region) in enumerate(truths):
            point, box = out[2 * i], out[2 * i + 1]
            point_ious.append(iou(point.mask, mask))
            box_ious.append(iou(box.mask, mask))
            if region.concept and model.concepts is not None:
                concepts["point"].append(point.concept == region.concept)
                concepts["box"].append(box.concept == region.concept)
            if region.caption and with_captions:
                refs.append(region)
                caps["point"].append(point.caption)
                caps["box"].append(box.caption)
            if len(shown) < examples:
                shown.append({"image": record.path.name, "truth": region.caption or region.concept,
                              "box_caption": box.caption, "box_concept": box.concept,
                              "point_iou": round(point_ious[-1], 3), "box_iou": round(box_ious[-1], 3)})
    if not point_ious:
        raise UserError(f"no evaluable regions in {sa1b_dir}")

    def mean(values):
        return float(np.mean(values)) if values else None

    def caption_scores(kind):
        """CIDEr-D, and the shares of captions whose colour and shape, colour, shape words are right."""
        if not refs:
            return None, None, None, None
        score, _ = cider_d(caps[kind], [[r.caption] for r in refs])
        said = [(named(c), tuple(r.concept.split(" ", 1))) for c, r in zip(caps[kind], refs) if r.concept]
        return (score, mean([words == truth for words, truth in said]),
                mean([words[0] == truth[0] for words, truth in said]), mean([words[1] == truth[1] for words, truth in said]))

    cider_box, right_box, colour_right, shape_right = caption_scores("box")
    cider_point, right_point, _, _ = caption_scores("point")

    def truth(kind):
        judged = caption_truth(caps[kind], [r.caption for r in refs])
        return judged.to_dict() if judged else None

    return SynthEvalReport(
        images=len(records) - skips.total, regions=len(point_ious), point_miou=mean(point_ious), box_miou=mean(box_ious),
        concept_top1_box=mean(concepts["box"]), concept_top1_point=mean(concepts["point"]),
        cider_d_box=cider_box, cider_d_point=cider_point, colour_shape_right_box=right_box,
        colour_shape_right_point=right_point, colour_right_box=colour_right, shape_right_box=shape_right,
        skipped_images=skips.total, examples=shown, caption_truth_box=truth("box"), caption_truth_point=truth("point"),
    )
