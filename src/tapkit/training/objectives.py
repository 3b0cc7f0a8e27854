"""The training forward passes: a module that takes a batch and returns its losses,
so DDP / FSDP wrap one `forward` (nanoGPT style).

Stage `segment`: promptable segmentation (focal:dice 20:1 on the routed mask, IoU
regression on every mask) + concept KL on the routed semantic token, with 2-stage
interactive or non-interactive prompts. Stage `caption`: teacher-forced captions
from the semantic token of a box prompt (mask 0) or of one point drawn from the
box's predicted mask (routed to the best of masks 1.. by predicted IoU); optionally
(`loss.words`) the caption's pieces predicted at the semantic token's own position,
and (`loss.distill`, the image decoder training) the decoder's masks, mask scores and
concept logits kept near a frozen `teacher` copy of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.tap.model import TapModel
from tapkit.training import losses
from tapkit.training.config import LossConfig
from tapkit.training.data import CaptionBatch, SegmentBatch
from tapkit.training.prompt_sampler import (
    PromptBatch,
    box_prompts,
    first_prompts,
    non_interactive_prompts,
    point_from_mask,
    refine_prompts,
)


@dataclass
class LossOutput:
    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


def _requires_grad(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


class TapObjective(nn.Module):
    def __init__(self, model: TapModel, loss: LossConfig, interactive_prob: float = 0.5, caption_point_prob: float = 0.5,
                 teacher: TapModel | None = None):
        super().__init__()
        self.model = model
        self.loss_cfg = loss
        self.interactive_prob = interactive_prob
        self.caption_point_prob = caption_point_prob
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()

    def forward(self, batch: SegmentBatch | CaptionBatch) -> LossOutput:
        if isinstance(batch, SegmentBatch):
            return self.segment(batch)
        return self.caption(batch)

    def _embed(self, images: torch.Tensor, image_index: torch.Tensor, cached: torch.Tensor | None = None) -> torch.Tensor:
        if cached is not None:
            embed = cached.to(self.model.device, self.model.dtype)
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and _requires_grad(self.model.image_encoder)):
                embed = self.model.encode_image(images)
        return embed[image_index.to(embed.device)]

    def _decode(self, embed: torch.Tensor, prompts: PromptBatch):
        device = self.model.device
        return self.model.decode(embed, torch.from_numpy(prompts.xy).to(device), torch.from_numpy(prompts.labels).to(device))

    def _decode_with_state(self, embed: torch.Tensor, prompts: PromptBatch):
        """(TapDecoding, image positions (HW, C)): the decoder's output and its internals."""
        device = self.model.device
        tokens = self.model.prompt_encoder(torch.from_numpy(prompts.xy).to(device), torch.from_numpy(prompts.labels).to(device))
        image_pos = self.model.prompt_encoder.dense_positions(*embed.shape[-2:])
        return self.model.image_decoder.decode_with_state(embed, image_pos, tokens), image_pos

    def _zero(self) -> LossOutput:
        """Keeps every rank in step (DDP) when a rank's batch has no usable region."""
        return LossOutput(sum(p.sum() * 0 for p in self.parameters() if p.requires_grad), {})

    def segment(self, batch: SegmentBatch) -> LossOutput:
        if batch.masks.shape[0] == 0:
            return self._zero()
        rng = np.random.default_rng(batch.seed)
        device, size = self.model.device, batch.masks.shape[-1]
        embed = self._embed(batch.images, batch.image_index)
        masks = batch.masks.numpy()
        target = batch.masks.to(device).float()
        concept_target = batch.concept_target.to(device)
        has_concept = batch.has_concept.to(device)
        interactive = rng.random() < self.interactive_prob
        prompts = first_prompts(masks, rng) if interactive else non_interactive_prompts(masks, rng)
        total, parts, chosen = self._segment_pass(embed, prompts, target, concept_target, has_concept, size)
        if interactive:
            predicted = (chosen.detach() > 0).cpu().numpy()
            refined = refine_prompts(prompts, masks, predicted, rng)
            total2, parts2, _ = self._segment_pass(embed, refined, target, concept_target, has_concept, size)
            total = (total + total2) / 2
            parts = {k: (v + parts2[k]) / 2 for k, v in parts.items()}
        return LossOutput(total, parts)

    def _segment_pass(self, embed, prompts, target, concept_target, has_concept, size):
        cfg = self.loss_cfg
        out = self._decode(embed, prompts)
        logits = out.mask_logits.float()
        if logits.shape[-1] != target.shape[-1]:
            # Losses at the decoder's resolution (4x the embedding grid): the target is
            # area-downsampled to soft coverage, 16x cheaper than upsampling the logits.
            target = F.adaptive_avg_pool2d(target.unsqueeze(1), logits.shape[-2:]).squeeze(1)
        focal, dice = losses.sigmoid_focal(logits, target), losses.dice(logits, target)
        per_mask = cfg.focal * focal + cfg.dice * dice
        is_box = torch.from_numpy(prompts.is_box).to(logits.device)
        index = losses.select_masks(per_mask, is_box)
        rows = torch.arange(len(index), device=logits.device)
        seg = per_mask[rows, index].mean()
        iou_loss = F.mse_loss(out.iou.float(), losses.mask_iou(logits, target))
        total = seg + cfg.iou * iou_loss
        parts = {"focal": float(focal[rows, index].mean().detach()), "dice": float(dice[rows, index].mean().detach()),
                 "iou": float(iou_loss.detach()), "mask_iou": float(losses.mask_iou(logits, target)[rows, index].mean())}
        if self.model.concepts is not None and bool(has_concept.any()):
            concept_logits = self.model.concepts.logits(out.sem_embeds[rows, index])
            kl = losses.concept_kl(concept_logits[has_concept], concept_target[has_concept])
            total = total + cfg.concept * kl
            parts["concept"] = float(kl.detach())
            hit = concept_logits.argmax(-1).eq(concept_target.argmax(-1))[has_concept].float().mean()
            parts["concept_acc"] = float(hit)
        chosen = F.interpolate(logits[rows, index].unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
        return total, parts, chosen.squeeze(1)

    def caption(self, batch: CaptionBatch) -> LossOutput:
        if batch.tokens.shape[0] == 0:
            return self._zero()
        cfg = self.loss_cfg
        rng = np.random.default_rng(batch.seed)
        tokenizer, device = self.model.tokenizer, self.model.device
        size = self.model.image_size
        embed = self._embed(batch.images, batch.image_index, batch.embeds)
        prompts = box_prompts(batch.boxes.numpy(), rng, size)
        decoder_grad = torch.is_grad_enabled() and _requires_grad(self.model.image_decoder)
        with torch.set_grad_enabled(decoder_grad):
            state, image_pos = self._decode_with_state(embed, prompts)
        out = state.output
        n = prompts.xy.shape[0]
        rows = torch.arange(n, device=device)
        index = torch.zeros(n, dtype=torch.long, device=device)
        if rng.random() < self.caption_point_prob:
            with torch.no_grad():
                low = out.mask_logits[:, 0:1].float()
                masks = (F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0).cpu().numpy()
            prompts = point_from_mask(masks, rng)
            with torch.set_grad_enabled(decoder_grad):
                state, image_pos = self._decode_with_state(embed, prompts)
            out = state.output
            index = out.iou[:, 1:].argmax(-1) + 1
        tokens = batch.tokens.to(device)
        inputs = tokens[:, :-1].masked_fill(tokens[:, :-1].eq(tokenizer.pad_id), 0)
        logits, prompt_logits = self.model.text_decoder.teacher_forced(out.sem_tokens[rows, index].unsqueeze(1), inputs)
        loss = losses.caption_loss(logits, tokens[:, 1:], tokenizer.pad_id, cfg.label_smoothing)
        total, parts = cfg.caption * loss, {"caption": float(loss.detach())}
        if cfg.words:
            special = (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
            words = losses.caption_words(prompt_logits[:, 0], tokens[:, 1:], special)
            total = total + cfg.words * words
            parts["words"] = float(words.detach())
        if cfg.neighbour and decoder_grad and batch.neighbour_boxes is not None:
            look = self._neighbour_attention(state, image_pos, rows, index, batch.neighbour_boxes, size)
            if look is not None:
                total = total + cfg.neighbour * look
                parts["neighbour"] = float(look.detach())
        if self.teacher is not None and decoder_grad:
            distill, distill_parts = self._distill(embed, prompts, out)
            total = total + cfg.distill * distill
            parts.update(distill_parts)
        return LossOutput(total, parts)

    def _neighbour_attention(self, state, image_pos, rows, index, neighbour_boxes, size) -> torch.Tensor | None:
        """Cross-entropy of the first head of the routed semantic token's final attention
        to a uniform target over the embedding cells inside the nearest other region's
        box (at least the cell of its centre); prompts without a neighbour are left out."""
        has = ~torch.isnan(neighbour_boxes[:, 0])
        if not bool(has.any()):
            return None
        grid = int(round(image_pos.shape[0] ** 0.5))
        target = neighbour_cells(neighbour_boxes[has], grid, size).to(self.model.device)
        keep = has.to(self.model.device)
        r, i = rows[keep], index[keep]
        logits = self.model.image_decoder.transformer.final_attention_logits(
            state.block_tokens[r, i], state.state_keys[r], image_pos, state.tokens[r, i])
        return -(target * logits[:, 0].float().log_softmax(-1)).sum(-1).mean()

    def _distill(self, embed: torch.Tensor, prompts: PromptBatch, out) -> tuple[torch.Tensor, dict[str, float]]:
        """Soft-target BCE of all mask logits, MSE of the mask scores and KL of every
        semantic token's concept logits, against the frozen teacher on the same prompts."""
        device = self.model.device
        with torch.no_grad():
            ref = self.teacher.decode(embed, torch.from_numpy(prompts.xy).to(device), torch.from_numpy(prompts.labels).to(device))
        mask = F.binary_cross_entropy_with_logits(out.mask_logits.float(), ref.mask_logits.float().sigmoid())
        score = F.mse_loss(out.iou.float(), ref.iou.float())
        total, parts = mask + score, {"distill_mask": float(mask.detach()), "distill_iou": float(score.detach())}
        if self.model.concepts is not None:
            student = self.model.concepts.logits(out.sem_embeds.flatten(0, 1))
            teacher = self.model.concepts.logits(ref.sem_embeds.flatten(0, 1))
            concept = losses.concept_kl(student, teacher.float().softmax(-1))
            total = total + concept
            parts["distill_concept"] = float(concept.detach())
        return total, parts


def neighbour_cells(boxes: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    """(N, grid * grid) uniform distributions over the cells of a grid x grid embedding of
    a size x size frame whose centres lie inside each box (N, 4) x1, y1, x2, y2; a box
    smaller than a cell gets the cell of its centre."""
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) * size / grid
    inside_x = (centres >= boxes[:, 0:1]) & (centres <= boxes[:, 2:3])
    inside_y = (centres >= boxes[:, 1:2]) & (centres <= boxes[:, 3:4])
    cells = (inside_y[:, :, None] & inside_x[:, None, :]).flatten(1).float()
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2 * grid / size).long().clamp(0, grid - 1)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2 * grid / size).long().clamp(0, grid - 1)
    empty = cells.sum(1) == 0
    cells[empty, (cy * grid + cx)[empty]] = 1.0
    return cells / cells.sum(1, keepdim=True)
