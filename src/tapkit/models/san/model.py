"""SAN, top to bottom: CLIP sees the image at `clip_resolution`, the side ViT sees it
whole; CLIP's maps are fused into the side tokens; the side blocks named in
`deep_supervision` are decoded into mask proposals and attention biases; the last CLIP
blocks recognise every proposal through its bias; each region embedding is scored
against the classes' text embeddings (+ the learnable background) at CLIP's logit scale.
With `cfg.pat` (PAT, docs/pat.md) the tokenizer reads CLIP's pyramid from the same pass
and its guidance is added to the side network's patch tokens at `pat.guidance_at`, or to
the mask decoder's pixel features (`pat.guidance_into: decoder`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.clip.model import ClipModel
from tapkit.models.san.classifier import LearnableBackground, text_classifier
from tapkit.models.san.config import SanConfig
from tapkit.models.san.fusion import AddFusion
from tapkit.models.san.mask_decoder import MaskDecoder
from tapkit.models.san.pat.tokenizer import FeaturePyramidTokenizer, PatOutput
from tapkit.models.san.recognition import ClipFeatures, clip_features, recognize
from tapkit.models.san.side_vit import SideViT


@dataclass
class SanAuxOutput:
    """One decoded side block: mask_logits (B, Q, h, w) on the side grid, class_logits
    (B, Q, C + 1) with the background ("no object") last."""

    mask_logits: torch.Tensor
    class_logits: torch.Tensor


@dataclass
class SanOutput:
    """The last side block's prediction (mask_logits, class_logits as in SanAuxOutput),
    `aux` the earlier supervised blocks (training), `pixels` the last block's patch
    features (B, side width, h, w) and `clip` the CLIP features the side network read;
    `pat` PAT's tokens, reconstruction and guidance when the config has a PAT."""

    mask_logits: torch.Tensor
    class_logits: torch.Tensor
    aux: list[SanAuxOutput] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    clip: ClipFeatures | None = None
    pat: PatOutput | None = None


class SanModel(nn.Module):
    family = "san"

    def __init__(self, cfg: SanConfig, clip: ClipModel | None = None):
        super().__init__()
        self.cfg = cfg
        self.clip = clip if clip is not None else ClipModel(cfg.clip)
        self.side = SideViT(cfg.side)
        width = cfg.clip.vision.width
        self.fusion = nn.ModuleDict({f"layer_{s}": AddFusion(width, cfg.side.width) for s, _ in cfg.fusion})
        self.mask_decoder = MaskDecoder(cfg.side.width, cfg.bias_heads, cfg.decoder_width, cfg.decoder_layers)
        self.background = LearnableBackground(cfg.clip.embed_dim)
        self.pat = FeaturePyramidTokenizer(cfg.pat, width, cfg.side.width) if cfg.pat is not None else None

    @property
    def size_divisibility(self) -> int:
        """Input sides must be multiples of this: the side patch, and the CLIP patch after scaling."""
        side, clip_patch = self.cfg.side.patch_size, self.cfg.clip.vision.patch_size
        step = side
        while (step * self.cfg.clip_resolution) % clip_patch or step % side:
            step += side
        return step

    def classifier(self, tokens: torch.Tensor, num_templates: int) -> torch.Tensor:
        """tokens (C * T, L) -> (C + 1, D) normalized class embeddings, background last."""
        return self.background(text_classifier(self.clip, tokens, num_templates))

    def clip_input(self, images: torch.Tensor) -> torch.Tensor:
        if self.cfg.clip_resolution == 1.0:
            return images
        return F.interpolate(images, scale_factor=self.cfg.clip_resolution, mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor, classifier: torch.Tensor, aux: bool | None = None) -> SanOutput:
        """images (B, 3, H, W) normalized with CLIP's mean/std, sides multiples of
        `size_divisibility`; classifier (C + 1, D) from `classifier` -> SanOutput.
        `aux` (default: when training) decodes every deep-supervision block."""
        aux = self.training if aux is None else aux
        cfg = self.cfg
        layers = {layer for _, layer in cfg.fusion} | (cfg.pat.layers if cfg.pat is not None else set())
        feats = clip_features(self.clip.visual, self.clip_input(images), layers, cfg.recognition_start,
                              cfg.clip_pos_antialias)
        fuse_at = dict(cfg.fusion)
        x, grid = self.side.tokens(images)
        q = cfg.side.num_queries
        pat = self._tokens(feats, grid)
        pos = self.side.positional(*grid)
        x = self._guide(0, self._fuse(0, x + pos, feats, fuse_at, grid, q), pat, q)
        decoded = []
        last = len(self.side.blocks)
        for i, block in enumerate(self.side.blocks, start=1):
            x = self._guide(i, self._fuse(i, block(x), feats, fuse_at, grid, q), pat, q)
            if i in cfg.deep_supervision and (aux or i == last):
                decoded.append(x)
            if i < last:
                x = x + pos
        scale = self.clip.logit_scale.exp()
        outs = []
        for tokens in decoded:
            pixels = tokens[:, q:].transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
            if pat is not None and cfg.pat.guidance_into == "decoder":
                pixels = pixels + pat.guidance.to(pixels.dtype)
            masks, bias = self.mask_decoder(tokens[:, :q], pixels)
            regions = recognize(self.clip.visual, cfg.recognition_start, feats, bias)
            outs.append(SanAuxOutput(masks, scale * regions @ classifier.to(regions.dtype).t()))
        return SanOutput(outs[-1].mask_logits, outs[-1].class_logits, outs[:-1], pixels, feats, pat)

    def _tokens(self, feats: ClipFeatures, grid: tuple[int, int]) -> PatOutput | None:
        if self.pat is None:
            return None
        maps = feats.maps if self.cfg.pat.clip_gradient else {k: v.detach() for k, v in feats.maps.items()}
        return self.pat(maps, grid)

    def tokenize(self, images: torch.Tensor) -> PatOutput:
        """PAT's tokens alone (CLIP's pyramid and the tokenizer, no side network): images
        as `forward` takes them -> PatOutput (its guidance on the side grid)."""
        assert self.pat is not None, "tokenize needs a PAT (SanConfig.pat)"
        feats = clip_features(self.clip.visual, self.clip_input(images), self.cfg.pat.layers, self.cfg.recognition_start,
                              self.cfg.clip_pos_antialias)
        patch = self.cfg.side.patch_size
        return self._tokens(feats, (images.shape[2] // patch, images.shape[3] // patch))

    def _guide(self, index: int, x: torch.Tensor, pat: PatOutput | None, q: int) -> torch.Tensor:
        """PAT's guidance (B, side width, h, w) added to the patch tokens at `pat.guidance_at`
        (with `pat.guidance_into: side`)."""
        if pat is None or self.cfg.pat.guidance_into != "side" or index != self.cfg.pat.guidance_at:
            return x
        return torch.cat([x[:, :q], x[:, q:] + pat.guidance.flatten(2).transpose(1, 2).to(x.dtype)], 1)

    def _fuse(self, index: int, x: torch.Tensor, feats: ClipFeatures, fuse_at: dict[int, int],
              grid: tuple[int, int], q: int) -> torch.Tensor:
        if index not in fuse_at:
            return x
        patches = self.fusion[f"layer_{index}"](x[:, q:], feats.maps[fuse_at[index]].to(x.dtype), grid)
        return torch.cat([x[:, :q], patches], 1)


def semantic_probabilities(mask_logits: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
    """SAN's semantic inference: sum_q softmax(class)[q, c] * sigmoid(mask)[q], the
    background column dropped. (B, Q, h, w), (B, Q, C + 1) -> (B, C, h, w)."""
    return torch.einsum("bqc,bqhw->bchw", class_logits.softmax(-1)[..., :-1], mask_logits.sigmoid())
