"""The inference protocol of a model family: how an image and prompts become the
model's inputs, and which of its masks answers a prompt.

Every promptable family (TAP, SAM, SCA) exposes one as `model.protocol`; the
predictor, the automatic mode, evaluation and the server are written against it and
against the model interface (`models/interface.py`, `PromptableModel`), so they need
no per-family code."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from tapkit.inputs.image import ResizeInfo
from tapkit.inputs.prompts import Prompt


class InferenceProtocol(Protocol):
    # The largest batch of prompts that still gives the reference implementation's numbers
    # bit for bit (matrix products round differently at other shapes); None: any batch.
    exact_batch: int | None

    def preprocess(self, rgb: np.ndarray, image_size: int) -> tuple[torch.Tensor, ResizeInfo]:
        """(H, W, 3) uint8 RGB -> (the batch `encode_image` takes, how the image maps to it)."""

    def frame(self, rgb: np.ndarray, image_size: int) -> torch.Tensor:
        """An image already at model scale (sides <= image_size, e.g. after training
        augmentation) -> the batch `encode_image` takes, without resizing."""

    def prompt_points(self, prompt: Prompt, width: int, height: int) -> np.ndarray:
        """Validates a prompt and returns its labelled points (P, 3) [x, y, label] in
        original pixels, in the order the family's reference feeds them."""

    def click_prompts(self, clicks: np.ndarray) -> np.ndarray:
        """(N, K, 2) foreground clicks in original pixels -> (N, P, 3) labelled points in
        the family's layout (what `prompt_points` gives for those clicks, unvalidated)."""

    def box_prompts(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) boxes [x1, y1, x2, y2] in original pixels -> (N, 2, 3) labelled points."""

    def multimask(self, num_masks: int) -> tuple[int, ...]:
        """The masks that answer an ambiguous one-click prompt when all are kept (the
        candidates of automatic mode; SAM's multimask output)."""

    def input_frame(self, points: np.ndarray, info: ResizeInfo) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, P, 3) labelled points in original pixels -> (xy (N, P, 2) float32 in the
        model input frame, labels (N, P) int64)."""

    def select_masks(self, iou: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Which mask answers each prompt: iou (N, M), labels (N, P) -> (N,) indices."""
