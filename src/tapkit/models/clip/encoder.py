"""The CLIP a user holds: a model, its tokenizer and its preprocessing, with text and
images in and L2-normalised embeddings out. `tapkit.load_clip` builds one."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from tapkit.models.clip.model import ClipModel
from tapkit.models.clip.preprocess import preprocess
from tapkit.models.clip.tokenizer import ClipTokenizer


class Clip:
    def __init__(self, model: ClipModel, tokenizer: ClipTokenizer, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.image_size = model.image_size
        self.mean, self.std = model.cfg.preprocess.mean, model.cfg.preprocess.std
        self.context_length = model.context_length
        self.embed_dim = model.embed_dim

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    @property
    def logit_scale(self) -> float:
        """exp of the learned log temperature, as CLIP multiplies cosine similarities by."""
        return float(self.model.logit_scale.detach().float().exp())

    def tokenize(self, texts: str | list[str]) -> torch.Tensor:
        """-> LongTensor (N, context_length)."""
        return self.tokenizer(texts, self.context_length)

    def preprocess(self, image) -> torch.Tensor:
        """A PIL image, (H, W, 3) uint8 array or path -> (3, S, S) float32, normalized."""
        return preprocess(image, self.image_size, self.model.cfg.preprocess)

    @torch.inference_mode()
    def encode_text(self, texts: str | list[str]) -> torch.Tensor:
        """-> FloatTensor (N, D), L2-normalised, on the model's device."""
        tokens = self.tokenize(texts)
        out = [self.model.encode_text(chunk.to(self.device)) for chunk in tokens.split(self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1)

    @torch.inference_mode()
    def encode_image(self, images) -> torch.Tensor:
        """One image or a list (PIL images, (H, W, 3) uint8 arrays or paths) -> FloatTensor
        (N, D), L2-normalised, on the model's device."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        dtype = self.model.logit_scale.dtype
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start : start + self.batch_size]])
            out.append(self.model.encode_image(batch.to(self.device, dtype)))
        return F.normalize(torch.cat(out).float(), dim=-1) if out else torch.zeros(0, self.embed_dim, device=self.device)
