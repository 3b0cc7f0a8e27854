"""`Segmenter`: a SAN-family model with its CLIP tokenizer and prompt templates.

An image is read (`tapkit.inputs`), its short side resized to the model's input size,
normalized with CLIP's mean/std and padded (bottom/right) to the model's divisibility;
the mask logits are upsampled to the padded size, cropped, resized to the image, and
SAN's semantic inference (sum over queries of class probability x mask probability)
gives per-class scores whose argmax is the label map. The class embeddings of the last
vocabulary are kept (explicit state: `vocabulary`), so labelling many images with the
same classes embeds the names once."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from tapkit.errors import UserError
from tapkit.inputs.image import as_rgb_array
from tapkit.models.clip.tokenizer import ClipTokenizer
from tapkit.models.san.model import SanModel, semantic_probabilities
from tapkit.models.san.templates import templates as template_set


@dataclass
class Segmentation:
    """label_map (H, W) int64: the index of each pixel's class in `classes`; scores (C,)
    float in [0, 1]: the mean over the pixels a class labels of its share of the pixel's
    semantic scores (0 where it labels none); areas (C,) int64 pixel counts; image_size (H, W)."""

    classes: list[str]
    label_map: np.ndarray
    scores: np.ndarray
    areas: np.ndarray
    image_size: tuple[int, int]

    def mask(self, name: str) -> np.ndarray:
        """(H, W) bool: the pixels labelled `name`."""
        return self.label_map == self.classes.index(name)


@dataclass
class TokenMaps:
    """PAT's tokens of one image (padding cropped): code_maps per pyramid level, finest
    first, (h_l, w_l) int64 code indices; num_codes per level; reconstruction (h, w, 3)
    uint8, the pixel branch's picture of the tokens; image_size (H, W) of the image."""

    code_maps: list[np.ndarray]
    num_codes: list[int]
    reconstruction: np.ndarray
    image_size: tuple[int, int]


@dataclass
class Vocabulary:
    """Class names and their (C + 1, D) classifier (background last) on one device."""

    classes: tuple[str, ...]
    classifier: torch.Tensor


def parse_classes(text: str) -> list[str]:
    """'a, b ,c' -> ['a', 'b', 'c']; one clear error for empty or repeated names."""
    names = [n.strip() for n in text.split(",")]
    return check_classes(names)


def check_classes(names: list[str]) -> list[str]:
    names = [n.strip() for n in names]
    if not names or any(not n for n in names):
        raise UserError("class names must be non-empty (e.g. --classes \"sky,tree,road\")")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"class names repeated: {', '.join(repeated)}")
    return names


class Segmenter:
    def __init__(self, model: SanModel, tokenizer: ClipTokenizer, input_size: int | None = None,
                 templates: tuple[str, ...] | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.input_size = input_size or model.cfg.side.image_size
        self.templates = templates or template_set(model.cfg.templates)
        pre = model.cfg.clip.preprocess
        self.mean, self.std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
        self.vocabulary: Vocabulary | None = None

    @property
    def device(self) -> torch.device:
        return self.model.background.bg_embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.background.bg_embed.dtype

    @torch.inference_mode()
    def classifier(self, classes: list[str]) -> torch.Tensor:
        """(C + 1, D) class embeddings of `classes` (+ the background), reused while the
        classes stay the same."""
        key = tuple(check_classes(list(classes)))
        if self.vocabulary is None or self.vocabulary.classes != key:
            tokens = self.tokenizer([t.format(c) for c in key for t in self.templates], self.model.clip.context_length)
            self.vocabulary = Vocabulary(key, self.model.classifier(tokens.to(self.device), len(self.templates)))
        return self.vocabulary.classifier

    def preprocess(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(H, W, 3) uint8 -> (1, 3, H', W') normalized, padded; and the resized size (h, w)."""
        h, w = rgb.shape[:2]
        scale = self.input_size / min(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR)) if (nh, nw) != (h, w) else rgb
        x = (torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255 - self.mean) / self.std
        d = self.model.size_divisibility
        ph, pw = -nh % d, -nw % d
        return F.pad(x, (0, pw, 0, ph))[None], (nh, nw)

    @torch.inference_mode()
    def probabilities(self, image, classes: list[str]) -> torch.Tensor:
        """(C, H, W) float32 semantic scores at the image's size."""
        rgb = as_rgb_array(image)
        classifier = self.classifier(classes)
        x, (nh, nw) = self.preprocess(rgb)
        out = self.model(x.to(self.device, self.dtype), classifier, aux=False)
        masks = F.interpolate(out.mask_logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        masks = F.interpolate(masks[:, :, :nh, :nw], size=rgb.shape[:2], mode="bilinear", align_corners=False)
        return semantic_probabilities(masks, out.class_logits.float())[0]

    @property
    def has_tokens(self) -> bool:
        """True for a PAT (a SAN with the feature-pyramid tokenizer): `tokens` works."""
        return self.model.cfg.pat is not None

    @torch.inference_mode()
    def tokens(self, image) -> TokenMaps:
        """An image -> TokenMaps (a PAT only: see `has_tokens`)."""
        if not self.has_tokens:
            raise UserError("this model is a SAN without PAT's feature-pyramid tokenizer: it has no tokens to show")
        rgb = as_rgb_array(image)
        x, (nh, nw) = self.preprocess(rgb)
        out = self.model.tokenize(x.to(self.device, self.dtype))

        def crop(t: torch.Tensor) -> torch.Tensor:
            h, w = t.shape[-2:]
            return t[..., : max(1, math.ceil(h * nh / x.shape[2])), : max(1, math.ceil(w * nw / x.shape[3]))]

        recon = crop(out.reconstruction[0].float()).cpu() * self.std + self.mean
        recon = (recon.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        return TokenMaps([crop(i[0]).cpu().numpy().astype(np.int64) for i in out.indices],
                         [self.model.cfg.pat.codebook.num_codes] * len(out.indices), recon, tuple(rgb.shape[:2]))

    def segment(self, image, classes: list[str]) -> Segmentation:
        """An image (path, PIL image or (H, W, 3) uint8) and class names -> Segmentation."""
        probs = self.probabilities(image, classes)
        score, label = (probs / probs.sum(0, keepdim=True).clamp(min=1e-12)).max(0)
        label_np = label.cpu().numpy().astype(np.int64)
        c = probs.shape[0]
        areas = np.bincount(label_np.ravel(), minlength=c)
        sums = np.bincount(label_np.ravel(), weights=score.cpu().numpy().ravel().astype(np.float64), minlength=c)
        scores = np.where(areas > 0, sums / np.maximum(areas, 1), 0.0)
        return Segmentation(list(classes), label_np, scores, areas, tuple(label_np.shape))
