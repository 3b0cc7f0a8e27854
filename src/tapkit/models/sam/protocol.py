"""SAM's inference protocol, as the official SamPredictor and ResizeLongestSide run it.

- The RGB image is resized so its longest side is the encoder size, with PIL's
  bilinear filter (torchvision's `resize` of a PIL image); the model normalizes it
  and zero-pads it bottom/right to a square.
- Prompt coordinates are scaled per axis by new/old size in float64, then float32.
- Token order: clicks, then a padding point when there is no box, then the two box
  corners.
- Multimask output for a single click without a box (the best of masks 1-3 by
  predicted IoU); one mask (mask 0) otherwise.
- One prompt per decoder call in `Predictor.predict` (see `exact_batch`); the
  automatic mode and `decode` take batches.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from tapkit.inputs.labels import BACKGROUND, BOX_TOP_LEFT, FOREGROUND
from tapkit.inputs.image import ResizeInfo
from tapkit.inputs.prompts import Prompt, box_points, click_points, encode_prompt


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """ResizeLongestSide.get_preprocess_shape: (new_h, new_w), rounded half up."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """(H, W, 3) uint8 -> resized (h, w, 3) uint8, PIL bilinear (torchvision returns
    the image untouched when the size does not change)."""
    new_h, new_w = preprocess_shape(rgb.shape[0], rgb.shape[1], long_side)
    if (new_h, new_w) == rgb.shape[:2]:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR))


def multimask_prompts(labels: torch.Tensor) -> torch.Tensor:
    """(N, P) labels -> (N,) bool: a single click and no box (SAM's ambiguous case)."""
    clicks = (labels.eq(FOREGROUND) | labels.eq(BACKGROUND)).sum(dim=1)
    return clicks.eq(1) & ~labels.eq(BOX_TOP_LEFT).any(dim=1)


def select_sam_masks(iou: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mask 0 for unambiguous prompts; for a single click, the best of masks 1..M-1."""
    best = iou[:, 1:].argmax(dim=1) + 1
    return torch.where(multimask_prompts(labels.to(iou.device)), best, torch.zeros_like(best))


class SamProtocol:
    # SamPredictor.predict decodes one prompt at a time; `Predictor.predict` does the same
    # for SAM so that its answers are the official ones bit for bit.
    exact_batch = 1

    def preprocess(self, rgb: np.ndarray, image_size: int) -> tuple[torch.Tensor, ResizeInfo]:
        h, w = rgb.shape[:2]
        resized = resize_longest_side(rgb, image_size)
        scale = float(np.float32(image_size / max(h, w)))
        return self.frame(resized, image_size), ResizeInfo((h, w), tuple(resized.shape[:2]), scale)

    def frame(self, rgb: np.ndarray, image_size: int) -> torch.Tensor:
        """An image already at model scale (sides <= image_size) -> the batch `encode_image`
        takes, (1, 3, h, w) uint8; the model normalizes and pads it."""
        assert max(rgb.shape[:2]) <= image_size
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous().unsqueeze(0)

    def prompt_points(self, prompt: Prompt, width: int, height: int) -> np.ndarray:
        points = encode_prompt(prompt, width, height, dtype=np.float64)
        is_box = np.isin(points[:, 2], (BOX_TOP_LEFT, BOX_TOP_LEFT + 1))
        return np.concatenate([points[~is_box], points[is_box]])

    def click_prompts(self, clicks: np.ndarray) -> np.ndarray:
        # float64, as SamPredictor and the automatic mask generator hold coordinates
        return click_points(clicks, np.float64)

    def box_prompts(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        return box_points(boxes_xyxy, np.float64)

    def multimask(self, num_masks: int) -> tuple[int, ...]:
        # multimask_output=True returns masks 1..M-1
        return tuple(range(1, num_masks))

    def input_frame(self, points: np.ndarray, info: ResizeInfo) -> tuple[torch.Tensor, torch.Tensor]:
        (old_h, old_w), (new_h, new_w) = info.original_size, info.resized_size
        xy = points[:, :, :2].astype(float)
        xy[..., 0] = xy[..., 0] * (new_w / old_w)
        xy[..., 1] = xy[..., 1] * (new_h / old_h)
        return torch.as_tensor(xy, dtype=torch.float), torch.from_numpy(points[:, :, 2].astype(np.int64))

    def select_masks(self, iou: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return select_sam_masks(iou, labels)
