"""Stage `sca` of the training engine: Segment-and-Caption-Anything's recipe.

A text feature mixer (and the projection and task tokens) is trained on a frozen
promptable segmenter (SAM, or TAP) and a frozen causal language model, with:
- region captions in the Visual Genome format (`data.vg`), task "caption";
- optionally detection data (`data.detection`, COCO-style), the class name as the
  caption of the "recognition" task;
- ground-truth boxes as prompts, large-scale jitter (`sca.lsj`) and optional flips;
- cross-entropy with label smoothing (`loss.label_smoothing`, 0.1 in the paper).

Batches are step-indexed like the other stages (a resumed run sees the same data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tapkit.data.records import ImageRecord, SkipCounter, load_rgb
from tapkit.errors import UserError
from tapkit.models.sca.config import TASKS
from tapkit.models.sca.model import IGNORE_INDEX, CaptionBatch, ScaModel
from tapkit.inputs.labels import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT
from tapkit.training.config import TrainConfig
from tapkit.training.data import epoch_order, step_rng
from tapkit.training.lsj import large_scale_jitter
from tapkit.training.objectives import LossOutput
from tapkit.training.stages import Stage


@dataclass
class ScaBatch:
    """images: per image, the batch its model's `encode_image` takes (at model scale,
    jittered); boxes (N, 4) x1, y1, x2, y2 in those pixels; image_index (N,); ids (N, L)
    caption pieces + EOS padded with IGNORE_INDEX; task (N,) index into TASKS."""

    images: list[torch.Tensor]
    boxes: torch.Tensor
    image_index: torch.Tensor
    ids: torch.Tensor
    task: torch.Tensor
    seed: int


def caption_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    """SCA's targets: the caption's pieces (no BOS), cut to leave room for EOS, then EOS."""
    return tokenizer.encode(text)[: max_tokens - 1] + [tokenizer.eos_id]


def region_text(record_task: int, region) -> str | None:
    return region.caption if TASKS[record_task] == "caption" else region.concept


class ScaBatches(torch.utils.data.Dataset):
    """The batch of (step, rank): `batch_images` images, each from the caption records
    or (with probability `sca.recognition_prob`) the detection records, jittered and
    framed for the model, with up to `prompts_per_image` boxes and their targets.
    Unreadable images are skipped (counted) by moving on in that source's order."""

    def __init__(self, captions: list[ImageRecord], detections: list[ImageRecord], protocol, image_size: int,
                 cfg: TrainConfig, rank: int, world_size: int, tokenizer):
        self.captions, self.detections = captions, detections
        self.protocol, self.size, self.tokenizer, self.sca = protocol, image_size, tokenizer, cfg.sca
        self.batch, self.seed, self.per_image = cfg.batch_images, cfg.seed, cfg.data.prompts_per_image
        self.rank, self.world = rank, world_size
        self.skips = SkipCounter()

    def __len__(self) -> int:
        return 2**62

    def _source(self, step: int, slot: int) -> tuple[list[ImageRecord], int]:
        use_detection = not self.captions or (
            bool(self.detections) and step_rng(self.seed, step, self.rank, 10_000 + slot).random() < self.sca.recognition_prob
        )
        if use_detection:
            return self.detections, TASKS.index("recognition")
        return self.captions, TASKS.index("caption")

    def _image(self, step: int, slot: int):
        records, task = self._source(step, slot)
        n = len(records)
        position = (step * self.world + self.rank) * self.batch + slot
        for tries in range(50):
            pos = position + tries
            record = records[epoch_order(n, self.seed, pos // n)[pos % n]]
            rgb = load_rgb(record.path, self.skips)
            if rgb is not None:
                return record, rgb, task
        raise RuntimeError(f"too many unreadable images ({self.skips.examples})")

    def __getitem__(self, step: int) -> ScaBatch:
        images, boxes, index, seqs, tasks = [], [], [], [], []
        for slot in range(self.batch):
            record, rgb, task = self._image(step, slot)
            rng = step_rng(self.seed, step, self.rank, slot + 1)
            regions = [r for r in record.regions if region_text(task, r)]
            xywh = np.array([r.bbox for r in regions], np.float32).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] - 1], axis=1)
            jit = large_scale_jitter(rgb, xyxy, self.size, self.sca.lsj, rng, self.sca.hflip_prob)
            images.append(self.protocol.frame(jit.image, self.size))
            for k in [int(k) for k in rng.permutation(len(regions)) if jit.keep[k]][: self.per_image]:
                boxes.append(jit.boxes[k])
                seqs.append(caption_ids(self.tokenizer, region_text(task, regions[k]), self.sca.max_caption_tokens))
                index.append(slot)
                tasks.append(task)
        ids = torch.full((len(seqs), max((len(s) for s in seqs), default=1)), IGNORE_INDEX, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return ScaBatch(
            images=images,
            boxes=torch.from_numpy(np.stack(boxes)) if boxes else torch.zeros(0, 4),
            image_index=torch.tensor(index, dtype=torch.long),
            ids=ids,
            task=torch.tensor(tasks, dtype=torch.long),
            seed=int(step_rng(self.seed, step, self.rank).integers(2**31)),
        )


class ScaObjective(nn.Module):
    """Caption loss of the mixer's queries for box prompts; the backbone runs without
    gradients (it is frozen), the language model with gradients flowing to its input."""

    def __init__(self, model: ScaModel, label_smoothing: float):
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, batch: ScaBatch) -> LossOutput:
        model, device = self.model, self.model.device
        queries, order = [], []
        for i, image in enumerate(batch.images):
            rows = (batch.image_index == i).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            corners = batch.boxes[rows].view(-1, 2, 2).to(device)
            labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], device=device).expand(rows.numel(), -1)
            with torch.no_grad():
                state = model.decode_with_state(model.encode_image(image.to(device)), corners, labels)
            queries.append(model.mixer(state))
            order.append(rows)
        if not queries:
            return LossOutput(sum(p.sum() * 0 for p in self.parameters() if p.requires_grad), {})
        rows = torch.cat(order)
        target = CaptionBatch(batch.ids[rows], batch.task[rows])
        out = model.caption_loss(torch.cat(queries), target, self.label_smoothing)
        valid = target.ids.to(device).ne(IGNORE_INDEX)
        accuracy = out.logits.argmax(-1).eq(target.ids.to(device))[valid].float().mean()
        return LossOutput(out.loss, {"caption": float(out.loss.detach()), "token_acc": float(accuracy)})


def build_model(cfg: TrainConfig) -> ScaModel:
    """The SCA to train: from `model.init_from` (an SCA checkpoint, e.g. after detection
    pre-training) or from `sca.backbone` + `sca.language_model` with a new mixer."""
    import tapkit
    from tapkit.models.sca.build import build_sca

    s = cfg.sca
    if cfg.model.init_from:
        model = tapkit.load_model(cfg.model.init_from, tokenizer=s.tokenizer, device="cpu")
        if model.family != "sca":
            raise UserError(f"model.init_from must be an SCA checkpoint for stage sca, got a {model.family.upper()} one")
        return model
    if not s.backbone or not s.language_model:
        raise UserError("stage sca needs sca.backbone (a segmenter checkpoint) and sca.language_model (a transformers model directory)")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise UserError("stage sca needs the transformers package: pip install 'tapkit-vision[sca]'") from None
    backbone = tapkit.load_model(s.backbone, device="cpu")
    try:
        lm = AutoModelForCausalLM.from_pretrained(s.language_model, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load the language model from {s.language_model}: {err}") from None
    return build_sca(backbone, lm.eval(), s.tokenizer or s.language_model, s.mixer, s.num_task_tokens, s.max_caption_tokens)


def make_batches(cfg: TrainConfig, model: ScaModel, rank: int, world_size: int) -> ScaBatches:
    from pathlib import Path

    d = cfg.data
    captions, detections = [], []
    if d.vg:
        from tapkit.data.vg import read_vg

        captions = read_vg(d.vg, d.image_root or Path(d.vg).parent)
    if d.detection:
        from tapkit.data.coco import read_coco

        detections = read_coco(d.detection, d.detection_root or Path(d.detection).parent)
    if not captions and not detections:
        raise UserError("stage sca needs data.vg (region captions) and/or data.detection (COCO-style instances)")
    if model.tokenizer is None:
        raise UserError("stage sca needs a tokenizer (sca.tokenizer, or one inside sca.language_model)")
    return ScaBatches(captions, detections, model.protocol, model.image_size, cfg, rank, world_size, model.tokenizer)


TRAINABLE = ("mixer.", "projection.", "task_tokens.")


def freeze(model: ScaModel, cfg: TrainConfig) -> None:
    """Only the mixer, the projection and the task tokens train (less any `freeze`
    prefixes); the backbone and the language model stay frozen and in eval mode."""
    fixed = tuple(cfg.freeze)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(TRAINABLE) and not name.startswith(fixed))
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("every parameter is frozen: nothing to train")
    model.train()


def export(model: ScaModel, full_state: dict) -> dict:
    """The self-contained SCA checkpoint's tensors (a tied output embedding once)."""
    keep = set(model.learned_state_dict())
    return {k: v for k, v in full_state.items() if k in keep}


STAGE = Stage(
    build_model=build_model,
    freeze=freeze,
    objective=lambda model, cfg: ScaObjective(model, cfg.loss.label_smoothing),
    batches=lambda cfg, model, info: make_batches(cfg, model, info.rank, info.world_size),
    export=export,
)
