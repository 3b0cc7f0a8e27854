"""The automatic mode: prompt a grid of points, keep the good masks, then name and
caption only the regions that survive.

Pipeline for one image (every stage is timed):
  encode      the image (and each crop, with multi-scale crops) once;
  decode      grid points in batches, through the family's protocol (prompt layout,
              coordinate frame) exactly as the predictor decodes a click; each point
              gives the protocol's multimask candidates or only its routed best mask;
  filter      as SamAutomaticMaskGenerator: predicted IoU first, then only the
              survivors are upscaled and scored for stability on the upscaled logits;
              empty and crop-edge masks go (and, if asked, masks lying along the image
              border: background), then box NMS inside each crop and across crops;
  postprocess upscale the kept masks to the image size, remove small islands and holes;
  concepts    top-k concept names of the kept regions, in one batch (optionally the
              mean over the candidates each region stands for);
  captions    captions of the kept regions, batched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from tapkit.errors import UserError
from tapkit.everything.filters import (
    border_connectivity,
    mask_boxes,
    mask_nms,
    near_crop_edge,
    nms,
    remove_small_regions,
    stability_score,
)
from tapkit.everything.grid import CropBox, crop_boxes, crop_points, layer_points_per_side
from tapkit.inputs.image import ResizeInfo, as_rgb_array
from tapkit.models.interface import PromptableModel
from tapkit.models.outputs import DecoderOutput
from tapkit.predictor.predictor import MASK_THRESHOLD, ImageEmbedding, Predictor, upscale_logits
from tapkit.predictor.results import mask_bbox, shown_iou
from tapkit.utils.rle import encode_rle

MASKS_PER_POINT = ("all", "best")
RANK_BY = ("iou", "stability")


@dataclass(frozen=True)
class EverythingConfig:
    """Settings of the automatic mode. Defaults follow SAM's automatic mask generator.

    points_per_side: grid of points_per_side^2 prompts on the image (and on each crop,
      divided by crop_points_downscale^layer). points_per_batch: prompts decoded at once.
    masks_per_point: "all" keeps every point's multimask candidates (masks 1-3, SAM's
      multimask rule), "best" only the one the family's routing picks.
    pred_iou_thresh: keep masks whose predicted IoU is above this.
    stability_thresh / stability_offset: keep masks whose stability score (IoU of the
      upscaled masks thresholded at +offset and -offset logits) is at least this.
    max_border_connectivity: drop masks whose boundary connectivity (their pixels on the
      image border / sqrt(their area), `filters.border_connectivity`) is above this: a
      patch of background along the border, which a model that was never prompted on
      background may score as high as an object. None (or inf): off, as SAM (a photo's
      sky or floor is a region too). Applied with the stability filter, before NMS.
    rank_by: which score ranks the candidates, in every NMS and in the order (and
      max_regions cut) of the regions: "iou", the predicted IoU (SAM), or "stability",
      the stability score (for a model whose IoU head ranks a merged or ragged mask
      above the clean one; "lower-scored" below means lower by this score).
    box_nms_thresh: box IoU above which the lower-scored of two masks is dropped.
    mask_nms_thresh: after box NMS and clean-up, mask IoU above which the lower-scored of
      two kept regions is dropped (1.0: off, as SAM). Catches one shape found twice where
      a stray island makes one mask's box much larger than the other's.
    crop_layers: extra layers of crops (layer i: 2^i x 2^i tiles); 0 = whole image only.
    crop_overlap_ratio, crop_points_downscale, crop_nms_thresh: tiling overlap, grid
      shrink per layer, and the NMS threshold between crops (smaller crops win).
    min_region_area: islands and holes smaller than this many pixels are removed and
      regions left smaller than it are dropped (0: off).
    max_regions: keep at most this many regions, best first by rank_by (None: all).
    top_k: concepts listed per region (0: none).
    concept_vote_iou: name each kept region by the mean concept probabilities of every
      candidate of its crop that passed the filters (before NMS) and whose low-resolution
      mask overlaps the region's with IoU >= this: the clicks that found the same region
      vote (one click's naming can be wrong where most are right). None: the region's own
      concepts, as `tapkit predict --point` names it (0 means None too). Captions stay
      the region's own.
    captions: caption the kept regions.
    caption_batch: regions captioned together."""

    points_per_side: int = 32
    points_per_batch: int = 64
    masks_per_point: str = "all"
    pred_iou_thresh: float = 0.88
    stability_thresh: float = 0.95
    stability_offset: float = 1.0
    max_border_connectivity: float | None = None
    rank_by: str = "iou"
    box_nms_thresh: float = 0.7
    mask_nms_thresh: float = 1.0
    crop_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_points_downscale: int = 1
    crop_nms_thresh: float = 0.7
    min_region_area: int = 0
    max_regions: int | None = None
    top_k: int = 5
    concept_vote_iou: float | None = None
    captions: bool = True
    caption_batch: int = 256

    def __post_init__(self):
        if self.max_border_connectivity == math.inf:  # "no limit" (a flag can only give a number) is off
            object.__setattr__(self, "max_border_connectivity", None)
        if self.concept_vote_iou == 0:  # likewise: 0 turns the vote off
            object.__setattr__(self, "concept_vote_iou", None)
        problems = []
        if self.points_per_side < 1:
            problems.append("points_per_side must be >= 1")
        if self.points_per_batch < 1:
            problems.append("points_per_batch must be >= 1")
        if self.masks_per_point not in MASKS_PER_POINT:
            problems.append(f"masks_per_point must be one of {', '.join(MASKS_PER_POINT)}")
        if self.rank_by not in RANK_BY:
            problems.append(f"rank_by must be one of {', '.join(RANK_BY)}")
        if self.stability_offset <= 0:
            problems.append("stability_offset must be > 0")
        if self.max_border_connectivity is not None and self.max_border_connectivity < 0:
            problems.append("max_border_connectivity must be >= 0")
        if not (0 <= self.box_nms_thresh <= 1 and 0 <= self.crop_nms_thresh <= 1 and 0 <= self.mask_nms_thresh <= 1):
            problems.append("NMS thresholds must lie in [0, 1]")
        if self.crop_layers < 0 or self.crop_points_downscale < 1 or not 0 <= self.crop_overlap_ratio < 1:
            problems.append("crop_layers must be >= 0, crop_points_downscale >= 1, crop_overlap_ratio in [0, 1)")
        if self.min_region_area < 0 or self.top_k < 0 or self.caption_batch < 1:
            problems.append("min_region_area and top_k must be >= 0, caption_batch >= 1")
        if self.concept_vote_iou is not None and not 0 < self.concept_vote_iou <= 1:
            problems.append("concept_vote_iou must lie in (0, 1]")
        if self.max_regions is not None and self.max_regions < 1:
            problems.append("max_regions must be >= 1")
        if problems:
            raise UserError("invalid everything settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_model(cls, model: PromptableModel, **settings) -> "EverythingConfig":
        """The settings for `model`: SAM's defaults, then those its checkpoint ships
        (`model.everything_defaults`, e.g. the thresholds the packaged default model was
        measured with), then `settings` (a user's flags, which always win)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"unknown everything settings: {', '.join(unknown)}")
        shipped = {k: v for k, v in model.everything_defaults.items() if k in names}
        return cls(**{**shipped, **settings})


@dataclass
class StageTimings:
    """Seconds spent in each stage (GPU work is synchronized at stage boundaries)."""

    encode: float = 0.0
    decode: float = 0.0
    filter: float = 0.0
    postprocess: float = 0.0
    concepts: float = 0.0
    captions: float = 0.0

    @property
    def total(self) -> float:
        return sum(dataclasses.astuple(self))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "total": self.total}


@dataclass
class FilterCounts:
    """How many candidates each filter let through: grid points, candidate masks,
    predicted IoU passed, stability passed (and not empty, not cut by a crop edge, not
    along the image border when max_border_connectivity is set),
    after box NMS, kept (after small-region removal and max_regions)."""

    points: int = 0
    candidates: int = 0
    passed_iou: int = 0
    passed_stability: int = 0
    after_nms: int = 0
    kept: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EverythingRegion:
    """One kept region. mask: (H, W) bool; bbox [x, y, w, h] of the mask; score:
    predicted IoU; stability: stability score (on the upscaled logits, as SAM);
    point: the grid point (x, y) that prompted it; mask_index: which of the model's masks;
    crop_box: [x, y, w, h] of the crop it was found in."""

    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    area: int
    score: float
    stability: float
    point: tuple[float, float]
    mask_index: int
    crop_box: tuple[int, int, int, int]
    concept: str | None = None
    concept_score: float | None = None
    concepts: list[tuple[str, float]] = field(default_factory=list)
    caption: str | None = None

    def to_json(self) -> dict:
        return {
            "prompt": {"points": [[float(self.point[0]), float(self.point[1]), 1]]},
            "mask": encode_rle(self.mask),
            "bbox": list(self.bbox),
            "area": self.area,
            "score": shown_iou(self.score),
            "stability": self.stability,
            "point": list(self.point),
            "mask_index": self.mask_index,
            "crop_box": list(self.crop_box),
            "concept": self.concept,
            "concept_score": self.concept_score,
            "concepts": [[name, prob] for name, prob in self.concepts],
            "caption": self.caption,
        }


@dataclass
class EverythingResult:
    """All kept regions of one image, best first (predicted IoU, or stability with rank_by="stability")."""

    height: int
    width: int
    regions: list[EverythingRegion]
    counts: FilterCounts
    timings: StageTimings
    config: EverythingConfig

    def to_json(self, image_path: str | None = None) -> dict:
        return {
            "image": {"path": image_path, "height": self.height, "width": self.width},
            "settings": self.config.to_dict(),
            "counts": self.counts.to_dict(),
            "timings": self.timings.to_dict(),
            "regions": [{"id": i, **r.to_json()} for i, r in enumerate(self.regions)],
        }


@dataclass
class Candidates:
    """Candidate masks of one or more crops. logits: (K, 4h, 4w) low-resolution mask
    logits of the padded model input; iou, stability: (K,); boxes: (K, 4) in image
    pixels; points: (K, 2) image pixels; mask_index, crop: (K,) int64; sem_tokens:
    (K, C); sem_embeds: (K, D)."""

    logits: torch.Tensor
    iou: torch.Tensor
    stability: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    mask_index: torch.Tensor
    crop: torch.Tensor
    sem_tokens: torch.Tensor
    sem_embeds: torch.Tensor

    def __len__(self) -> int:
        return self.iou.shape[0]

    def select(self, index: torch.Tensor) -> "Candidates":
        return Candidates(*(getattr(self, f.name)[index.to(getattr(self, f.name).device)] for f in dataclasses.fields(self)))

    @classmethod
    def cat(cls, parts: list["Candidates"]) -> "Candidates":
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))


class EverythingGenerator:
    """Segments, names and captions every region of an image with a promptable model
    (TAP, SAM, SCA: names where the model `can_name`, captions where it `can_caption`).

    >>> generator = EverythingGenerator(model, EverythingConfig(points_per_side=16))
    >>> result = generator.generate("photo.jpg")
    >>> [(r.concept, r.caption) for r in result.regions]
    """

    def __init__(self, model: PromptableModel, config: EverythingConfig | None = None):
        """config: None for the model's own settings (`EverythingConfig.for_model`)."""
        self.model = model
        self.config = config or EverythingConfig.for_model(model)
        self.predictor = Predictor(model, max_batch=self.config.points_per_batch)

    @contextlib.contextmanager
    def _stage(self, timings: StageTimings, name: str) -> Iterator[None]:
        cuda = self.model.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.model.device)
        start = time.perf_counter()
        yield
        if cuda:
            torch.cuda.synchronize(self.model.device)
        setattr(timings, name, getattr(timings, name) + time.perf_counter() - start)

    @torch.inference_mode()
    def generate(self, image, embedding: ImageEmbedding | None = None) -> EverythingResult:
        """image: an RGB array (H, W, 3) uint8, a PIL image or a path. `embedding`: the
        image's encoding if already computed (e.g. by a server's cache); reused for the
        full-image crop instead of encoding again."""
        cfg = self.config
        rgb = as_rgb_array(image)
        height, width = rgb.shape[:2]
        timings, counts = StageTimings(), FilterCounts()
        crops = crop_boxes(height, width, cfg.crop_layers, cfg.crop_overlap_ratio)
        infos: list[ResizeInfo] = []
        parts, pools = [], []
        for index, crop in enumerate(crops):
            full = (crop.x0, crop.y0, crop.x1, crop.y1) == (0, 0, width, height)
            candidates, pool, info = self._crop_candidates(rgb, crop, index, timings, counts, embedding if full else None)
            infos.append(info)
            parts.append(candidates)
            pools.append(pool)
        candidates = Candidates.cat(parts)
        if len(crops) > 1:
            with self._stage(timings, "filter"):
                candidates = self._nms_across_crops(candidates, crops)
        counts.after_nms = len(candidates)
        if cfg.max_regions is not None and cfg.min_region_area == 0 and cfg.mask_nms_thresh >= 1:
            # nothing after this point reorders the candidates, so only the best are upscaled
            with self._stage(timings, "filter"):
                best = torch.sort(self._rank(candidates), descending=True, stable=True).indices[: cfg.max_regions]
                candidates = candidates.select(best)
        with self._stage(timings, "postprocess"):
            regions, kept = self._regions(candidates, crops, infos, height, width)
        if cfg.max_regions is not None:
            regions = regions[: cfg.max_regions]
            kept = kept.select(torch.arange(len(regions)))
        counts.kept = len(regions)
        with self._stage(timings, "concepts"):
            self._name(regions, kept, pools)
        with self._stage(timings, "captions"):
            self._caption(regions, kept.sem_tokens)
        return EverythingResult(height, width, regions, counts, timings, cfg)

    def _crop_candidates(self, rgb, crop: CropBox, crop_index: int, timings: StageTimings, counts: FilterCounts, embedding: ImageEmbedding | None = None):
        cfg = self.config
        if embedding is None:
            with self._stage(timings, "encode"):
                embedding = self.predictor.embed_image(rgb[crop.y0 : crop.y1, crop.x0 : crop.x1])
        self.predictor.set_embedding(embedding)
        side = layer_points_per_side(cfg.points_per_side, crop.layer, cfg.crop_points_downscale)
        points = crop_points(crop, side)
        counts.points += len(points)
        parts = []
        for start in range(0, len(points), cfg.points_per_batch):
            batch = points[start : start + cfg.points_per_batch]
            with self._stage(timings, "decode"):
                out = self._decode(batch)
            with self._stage(timings, "filter"):
                parts.append(self._filter(out, embedding.info, batch, crop, crop_index, rgb.shape[:2], counts))
        with self._stage(timings, "filter"):
            pool = Candidates.cat(parts)
            candidates = pool.select(nms(pool.boxes, self._rank(pool), cfg.box_nms_thresh))
        return candidates, pool, embedding.info

    def _decode(self, points: np.ndarray) -> tuple[DecoderOutput, torch.Tensor]:
        """points (N, 2) crop pixels -> every mask of N one-click prompts, decoded as the
        predictor decodes a click, and the prompts' labels."""
        return self.predictor.decode_all(self.model.protocol.click_prompts(points[:, None, :]))

    def _filter(self, decoded: tuple[DecoderOutput, torch.Tensor], info: ResizeInfo, points: np.ndarray, crop: CropBox, crop_index: int, image_hw, counts: FilterCounts) -> Candidates:
        """SamAutomaticMaskGenerator's order: predicted IoU, then stability of the upscaled
        logits (only the IoU survivors are upscaled), then empty and crop-edge masks."""
        cfg = self.config
        out, labels = decoded
        n, num_masks = out.iou.shape
        device = out.iou.device
        protocol = self.model.protocol
        if cfg.masks_per_point == "all":
            choice = torch.tensor(protocol.multimask(num_masks), device=device).expand(n, -1)
        else:
            choice = protocol.select_masks(out.iou, labels).unsqueeze(1)
        rows = torch.arange(n, device=device).unsqueeze(1).expand_as(choice)
        iou = out.iou[rows, choice].flatten()
        counts.candidates += iou.numel()
        keep = iou.gt(cfg.pred_iou_thresh).nonzero().squeeze(1)
        counts.passed_iou += keep.numel()
        rows, choice = rows.flatten()[keep], choice.flatten()[keep]
        logits = out.mask_logits[rows, choice]
        height, width = image_hw
        image_sides = (crop.y0 == 0, crop.y1 == height, crop.x0 == 0, crop.x1 == width)
        stability, boxes, connectivity = self._stability_and_boxes(logits, info, image_sides)
        boxes = boxes + torch.tensor([crop.x0, crop.y0] * 2, dtype=torch.float32, device=device)
        good = stability.ge(cfg.stability_thresh) & (boxes[:, 2] > boxes[:, 0])
        if cfg.max_border_connectivity is not None:
            good &= connectivity.le(cfg.max_border_connectivity)
        if crop.layer > 0:
            good &= ~near_crop_edge(boxes, crop.xyxy(), (0, 0, width, height))
        good = good.nonzero().squeeze(1)
        counts.passed_stability += good.numel()
        rows, choice = rows[good], choice[good]
        offset = torch.tensor([crop.x0, crop.y0], dtype=torch.float32)
        return Candidates(
            logits=logits[good],
            iou=iou[keep][good],
            stability=stability[good],
            boxes=boxes[good],
            points=torch.from_numpy(points).to(device)[rows] + offset.to(device),
            mask_index=choice,
            crop=torch.full((good.numel(),), crop_index, dtype=torch.long, device=device),
            sem_tokens=out.sem_tokens[rows, choice],
            sem_embeds=out.sem_embeds[rows, choice],
        )

    def _stability_and_boxes(self, logits: torch.Tensor, info: ResizeInfo, image_sides: tuple[bool, bool, bool, bool],
                             chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Low-resolution logits (K, 4h, 4w) -> stability scores (K,) of the logits upscaled
        to the crop's size, the boxes (K, 4) of their masks in crop pixels, and their border
        connectivity (K,) on the crop sides that are image sides (top, bottom, left, right).
        Upscaled a few at a time, so memory stays that of `chunk` full-size masks."""
        stability, boxes, connectivity = [], [], []
        for start in range(0, len(logits), chunk):
            up = upscale_logits(logits[start : start + chunk], info, self.model.image_size)
            masks = up.gt(MASK_THRESHOLD)
            stability.append(stability_score(up, self.config.stability_offset, MASK_THRESHOLD))
            boxes.append(mask_boxes(masks))
            if self.config.max_border_connectivity is not None:
                connectivity.append(border_connectivity(masks, image_sides))
        if not stability:
            empty = logits.new_zeros(0, dtype=torch.float32)
            return empty, logits.new_zeros((0, 4), dtype=torch.float32), empty
        return torch.cat(stability), torch.cat(boxes), torch.cat(connectivity) if connectivity else torch.zeros(len(logits))

    def _rank(self, candidates: Candidates) -> torch.Tensor:
        """The score (K,) float32 that ranks candidates: predicted IoU or stability (rank_by)."""
        return (candidates.iou if self.config.rank_by == "iou" else candidates.stability).float()

    def _nms_across_crops(self, candidates: Candidates, crops: list[CropBox]) -> Candidates:
        """Overlapping masks from different crops: the one from the smaller crop wins
        (it saw the region at a higher resolution); ties go to the higher rank_by score."""
        best_first = torch.sort(self._rank(candidates), descending=True, stable=True).indices
        candidates = candidates.select(best_first)
        areas = torch.tensor([c.area for c in crops], dtype=torch.float32, device=candidates.crop.device)
        return candidates.select(nms(candidates.boxes, areas[candidates.crop].reciprocal(), self.config.crop_nms_thresh))

    def _regions(self, candidates: Candidates, crops: list[CropBox], infos: list[ResizeInfo], height: int, width: int):
        """Full-resolution masks of the survivors, cleaned of small islands and holes.
        Returns (regions best first by rank_by, their candidates in the same order)."""
        cfg = self.config
        masks = self._full_masks(candidates, crops, infos, height, width)
        if cfg.min_region_area > 0 and masks:
            changed = []
            for i, mask in enumerate(masks):
                masks[i], was_changed = remove_small_regions(mask, cfg.min_region_area)
                changed.append(was_changed)
            boxes = torch.tensor([_xyxy(mask_bbox(m)) for m in masks], dtype=torch.float32)
            by_iou = torch.sort(self._rank(candidates).cpu(), descending=True, stable=True).indices
            unchanged = 1.0 - torch.tensor(changed, dtype=torch.float32)
            survivors = by_iou[nms(boxes[by_iou], unchanged[by_iou], cfg.box_nms_thresh)]
            keep = [int(i) for i in survivors if masks[int(i)].sum() >= cfg.min_region_area]
        else:
            keep = list(range(len(masks)))
        ranks = self._rank(candidates).cpu().tolist()
        keep = sorted((i for i in keep if masks[i].any()), key=lambda i: -ranks[i])
        if cfg.mask_nms_thresh < 1 and len(keep) > 1:
            kept = mask_nms([masks[i] for i in keep], [ranks[i] for i in keep], cfg.mask_nms_thresh)
            keep = [keep[j] for j in kept]
        selected = candidates.select(torch.tensor(keep, dtype=torch.long))
        scores, stabilities = selected.iou.float().tolist(), selected.stability.float().tolist()
        points, mask_index, crop_index = selected.points.tolist(), selected.mask_index.tolist(), selected.crop.tolist()
        regions = []
        for j, i in enumerate(keep):
            regions.append(
                EverythingRegion(
                    mask=masks[i],
                    bbox=mask_bbox(masks[i]),
                    area=int(masks[i].sum()),
                    score=scores[j],
                    stability=stabilities[j],
                    point=(points[j][0], points[j][1]),
                    mask_index=mask_index[j],
                    crop_box=crops[crop_index[j]].xywh(),
                )
            )
        return regions, selected

    def _full_masks(self, candidates: Candidates, crops, infos, height: int, width: int, chunk: int = 16) -> list[np.ndarray]:
        masks: list[np.ndarray | None] = [None] * len(candidates)
        for crop_index, (crop, info) in enumerate(zip(crops, infos)):
            members = (candidates.crop == crop_index).nonzero().squeeze(1).tolist()
            for start in range(0, len(members), chunk):
                part = members[start : start + chunk]
                local = upscale_logits(candidates.logits[part], info, self.model.image_size).gt(MASK_THRESHOLD).cpu().numpy()
                for i, m in zip(part, local):
                    if crop.area == height * width:
                        masks[i] = m
                    else:
                        full = np.zeros((height, width), dtype=bool)
                        full[crop.y0 : crop.y1, crop.x0 : crop.x1] = m
                        masks[i] = full
        return masks  # type: ignore[return-value]

    def _name(self, regions: list[EverythingRegion], kept: Candidates, pools: list[Candidates]) -> None:
        """Top-k concepts of the kept regions: their own, or with `concept_vote_iou` the
        mean over the candidates of their crop that overlap them (`pools`: per crop, the
        candidates that passed the filters, before NMS)."""
        if not self.model.can_name or self.config.top_k == 0 or not regions:
            return
        vocabulary = self.model.concepts
        probs = vocabulary.probabilities(kept.sem_embeds)
        if self.config.concept_vote_iou is not None:
            for crop_index, pool in enumerate(pools):
                rows = (kept.crop == crop_index).nonzero().squeeze(1)
                if len(rows) and len(pool):
                    probs[rows.to(probs.device)] = self._voted_probabilities(kept.logits[rows], pool, probs[rows.to(probs.device)])
        for region, names in zip(regions, vocabulary.names_of(probs, self.config.top_k)):
            region.concepts = names
            region.concept, region.concept_score = names[0]

    def _voted_probabilities(self, logits: torch.Tensor, pool: Candidates, own: torch.Tensor, max_side: int = 64) -> torch.Tensor:
        """Mean concept probabilities (K, V) over the pool candidates whose low-resolution
        masks overlap each of `logits` (K, 4h, 4w) with IoU >= concept_vote_iou (masks
        subsampled to at most max_side cells a side); `own` (K, V) where none does."""
        step = max(1, -(-logits.shape[-1] // max_side))
        region = logits[:, ::step, ::step].gt(MASK_THRESHOLD).flatten(1).float()
        members = pool.logits[:, ::step, ::step].gt(MASK_THRESHOLD).flatten(1).float()
        inter = region @ members.T
        union = region.sum(1, keepdim=True) + members.sum(1)[None, :] - inter
        votes = (inter >= self.config.concept_vote_iou * union).logical_and(union > 0).float()
        pool_probs = self.model.concepts.probabilities(pool.sem_embeds).to(own.device)
        voted = votes.to(own.device) @ pool_probs
        count = votes.sum(1, keepdim=True).to(own.device)
        return torch.where(count > 0, voted / count.clamp(min=1), own)

    def _caption(self, regions: list[EverythingRegion], sem_tokens: torch.Tensor) -> None:
        if not self.config.captions or not self.model.can_caption or not regions:
            return
        step = self.config.caption_batch
        for start in range(0, len(regions), step):
            texts = self.predictor.caption(sem_tokens[start : start + step])
            for region, text in zip(regions[start : start + step], texts):
                region.caption = text


def _xyxy(bbox: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x, y, w, h = bbox
    return (x, y, x + w, y + h)


def tokenize_everything(model: PromptableModel, image, config: EverythingConfig | None = None, **settings) -> EverythingResult:
    """Every region of one image, segmented, named and captioned.
    `settings` override fields of `config` (e.g. points_per_side=16, captions=False);
    without a config, of the model's own settings (`EverythingConfig.for_model`)."""
    config = dataclasses.replace(config, **settings) if config else EverythingConfig.for_model(model, **settings)
    return EverythingGenerator(model, config).generate(image)
