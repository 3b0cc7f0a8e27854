"""TAP's inference protocol (the reference's): BGR input resized by its
short-side-then-long-side rule and padded with the pixel mean, prompt points
scaled by one float32 factor, box corners first, and routing by predicted IoU
(box prompts take mask 0, point prompts the best of masks 1-3)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tapkit.inputs.image import ResizeInfo
from tapkit.inputs.labels import BOX_TOP_LEFT
from tapkit.inputs.prompts import Prompt, box_points, click_points, encode_prompt
from tapkit.models.tap.config import PIXEL_MEAN_BGR

# The reference pads a uint8 canvas with the float pixel mean, which truncates.
PAD_VALUE_BGR = np.array(PIXEL_MEAN_BGR).astype(np.uint8)

# The reference ranks masks by IoU plus this offset: +500 on mask 0 for box
# prompts, -500 on mask 0 for point prompts (so points pick from masks 1-3).
ROUTING_OFFSET = 1000.0


def select_masks(iou: torch.Tensor, is_box: torch.Tensor) -> torch.Tensor:
    """The reference's routing: box prompts take mask 0, point prompts the best of the
    others by predicted IoU. iou: (N, M) float32; is_box: (N,) bool -> (N,) indices."""
    offset = torch.zeros_like(iou)
    offset[:, 0] = (is_box.to(iou.dtype) - 0.5) * ROUTING_OFFSET
    return (iou + offset).argmax(dim=1)


def resize_scale(height: int, width: int, target: int) -> float:
    """The reference's rule: fit the short side, unless the long side then exceeds the target."""
    scale = float(target) / float(min(height, width))
    if np.round(scale * max(height, width)) > target:
        scale = float(target) / float(max(height, width))
    return scale


def preprocess(rgb: np.ndarray, target: int) -> tuple[np.ndarray, ResizeInfo]:
    """(H, W, 3) uint8 RGB -> ((target, target, 3) uint8 BGR resized and padded, ResizeInfo)."""
    h, w = rgb.shape[:2]
    scale = resize_scale(h, w, target)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.empty((target, target, 3), np.uint8)
    canvas[:] = PAD_VALUE_BGR
    canvas[:new_h, :new_w] = resized[:, :, ::-1]
    return canvas, ResizeInfo((h, w), (new_h, new_w), float(np.float32(scale)))


class TapProtocol:
    exact_batch = None

    def preprocess(self, rgb: np.ndarray, image_size: int) -> tuple[torch.Tensor, ResizeInfo]:
        padded, info = preprocess(rgb, image_size)
        return torch.from_numpy(padded).unsqueeze(0), info

    def frame(self, rgb: np.ndarray, image_size: int) -> torch.Tensor:
        """An image already at model scale (sides <= image_size) -> (1, S, S, 3) uint8 BGR
        padded with the pixel mean, the batch `encode_image` takes."""
        h, w = rgb.shape[:2]
        assert max(h, w) <= image_size
        canvas = np.empty((image_size, image_size, 3), np.uint8)
        canvas[:] = PAD_VALUE_BGR
        canvas[:h, :w] = rgb[:, :, ::-1]
        return torch.from_numpy(canvas).unsqueeze(0)

    def prompt_points(self, prompt: Prompt, width: int, height: int) -> np.ndarray:
        return encode_prompt(prompt, width, height)

    def click_prompts(self, clicks: np.ndarray) -> np.ndarray:
        return click_points(clicks)

    def box_prompts(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        return box_points(boxes_xyxy)

    def multimask(self, num_masks: int) -> tuple[int, ...]:
        # mask 0 answers box prompts; the point-prompt masks are the others
        return tuple(range(1, num_masks))

    def input_frame(self, points: np.ndarray, info: ResizeInfo) -> tuple[torch.Tensor, torch.Tensor]:
        xy = points[:, :, :2].astype(np.float32) * np.float32(info.scale)
        return torch.from_numpy(xy), torch.from_numpy(points[:, :, 2].astype(np.int64))

    def select_masks(self, iou: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return select_masks(iou, labels[:, 0].to(iou.device) == BOX_TOP_LEFT)
