"""SAN's architecture as data: the side network, where CLIP's features are fused in,
where recognition starts, the mask decoder's sizes, and the CLIP underneath.

Presets: `san_vit_b_16` and `san_vit_large_14` as released (OpenAI CLIP ViT-B/16 and
ViT-L/14-336), `san_synthetic` on the packaged CLIP trained on the synthetic world."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tapkit.models.clip.config import ClipConfig, TextConfig, VisionConfig
from tapkit.models.san.pat.config import PatConfig


@dataclass(frozen=True)
class SideConfig:
    """The side ViT: `layers` pre-norm blocks of `width` over patches of `patch_size`,
    `num_queries` learnable query tokens sharing their self-attention; `image_size` is the
    size its positional embedding was trained at (it is resized for other inputs)."""

    image_size: int = 640
    patch_size: int = 16
    width: int = 240
    layers: int = 8
    heads: int = 6
    mlp_ratio: float = 4.0
    num_queries: int = 100

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class SanConfig:
    """fusion: (side index, CLIP layer) pairs; side index 0 is before the first side block,
    k after block k; CLIP layer 0 is the stem (after ln_pre), l the output of block l.
    recognition_start: the CLIP blocks from this index on recognise the proposals.
    deep_supervision: the side blocks (1-based) whose tokens are decoded (the last is the
    prediction). clip_resolution: CLIP sees the image scaled by this factor.
    clip_pos_antialias: whether CLIP's positional embedding is resized antialiased (open_clip)
    or not (SAN's released code)."""

    clip: ClipConfig = field(default_factory=ClipConfig)
    side: SideConfig = field(default_factory=SideConfig)
    fusion: tuple[tuple[int, int], ...] = ((0, 0), (1, 3), (2, 6), (3, 9))
    recognition_start: int = 9
    deep_supervision: tuple[int, ...] = (7, 8)
    clip_resolution: float = 0.5
    decoder_width: int = 256
    decoder_layers: int = 3
    templates: str = "vild"
    clip_pos_antialias: bool = False
    pat: PatConfig | None = None  # PAT (docs/pat.md): feature-pyramid tokens guiding the side network

    def __post_init__(self):
        assert 0 < self.recognition_start < self.clip.vision.layers, "recognition needs at least one CLIP block"
        assert all(0 <= layer <= self.recognition_start for _, layer in self.fusion), "fusion reads CLIP before recognition"
        assert all(1 <= d <= self.side.layers for d in self.deep_supervision) and self.deep_supervision[-1] == self.side.layers
        if self.pat is not None:
            assert all(layer <= self.recognition_start for layer in self.pat.layers), "PAT reads CLIP before recognition"
            assert self.pat.guidance_into != "side" or 0 <= self.pat.guidance_at < self.side.layers, \
                "PAT's guidance enters before the last side block"

    @property
    def bias_heads(self) -> int:
        return self.clip.vision.heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SanConfig":
        clip = d["clip"]
        from tapkit.models.clip.config import PreprocessConfig

        clip_cfg = ClipConfig(clip["embed_dim"], VisionConfig(**clip["vision"]), TextConfig(**clip["text"]),
                              clip["quick_gelu"], PreprocessConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                                     for k, v in clip["preprocess"].items()}))
        return cls(clip=clip_cfg, side=SideConfig(**d["side"]), fusion=tuple(tuple(p) for p in d["fusion"]),
                   recognition_start=d["recognition_start"], deep_supervision=tuple(d["deep_supervision"]),
                   clip_resolution=d["clip_resolution"], decoder_width=d["decoder_width"],
                   decoder_layers=d["decoder_layers"], templates=d["templates"],
                   pat=PatConfig.from_dict(d["pat"]) if d.get("pat") else None,
                   # files written before the field existed were all trained antialiased
                   clip_pos_antialias=d.get("clip_pos_antialias", True))


OPENAI_B16 = ClipConfig(512, VisionConfig(224, 16, 768, 12, 12), TextConfig(77, 49408, 512, 8, 12), quick_gelu=True)
OPENAI_L14_336 = ClipConfig(768, VisionConfig(336, 14, 1024, 24, 16), TextConfig(77, 49408, 768, 12, 12), quick_gelu=True)

PRESETS: dict[str, SanConfig] = {
    "san_vit_b_16": SanConfig(clip=OPENAI_B16),
    "san_vit_large_14": SanConfig(clip=OPENAI_L14_336, fusion=((0, 0), (1, 6), (2, 12), (3, 18)),
                                  recognition_start=18, clip_resolution=0.7),
}
