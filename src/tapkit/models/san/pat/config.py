"""PAT's architecture as data (Feature Pyramid Tokenization on SAN, seed 004).

A PAT is a SAN with a `PatConfig` (`SanConfig.pat`): the levels of the frozen CLIP's
feature pyramid (which block, at which resolution), one codebook per level, the pixel
branch that reconstructs the image from the tokens, and the semantic branch that turns
them into guidance for SAN's side network. Everything here is the project's reading of
the abstract (docs/pat.md); the paper's own sizes are not public."""

from __future__ import annotations

from dataclasses import asdict, dataclass

COUPLINGS = ("loose", "coupled")
GUIDANCE_INTO = ("side", "decoder")


@dataclass(frozen=True)
class PyramidLevel:
    """One level: CLIP layer `layer` (0 the stem after ln_pre, l the output of block l),
    average-pooled by `stride` from CLIP's patch grid."""

    layer: int
    stride: int = 1


@dataclass(frozen=True)
class CodebookConfig:
    """`num_codes` codes of `dim` per level. `ema`: codes follow exponential moving
    averages of their assigned features (decay `decay`); otherwise they are learned by
    the codebook term ||sg(z) - e||^2. Both add the commitment term `beta` ||z - sg(e)||^2.
    A code whose running usage falls below `dead_threshold` assignments per step is
    restarted on a random feature of the batch."""

    num_codes: int = 64
    dim: int = 32
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.95
    dead_threshold: float = 0.05


@dataclass(frozen=True)
class PatConfig:
    """levels: finest first. width: the pixel branch's channels. guidance_width: the
    semantic branch's hidden channels. coupling: `loose` (the segmentation loss trains the
    semantic branch only; tokens and the pixel decoder learn from reconstruction and the
    codebook terms) or `coupled` (segmentation gradients reach them too).
    shared_decoder: the semantic branch reads the pixel branch's top-down decoder
    features (one decoder for both tasks) instead of fusing the raw tokens itself.
    guidance_into: `side` adds the guidance to the side network's patch tokens at
    `guidance_at` (the side-network index, as in SanConfig.fusion); `decoder` adds it to the
    mask decoder's pixel features (the last side block's patch tokens, for every decoded
    output), so it shapes the mask proposals and the attention biases CLIP recognises with
    directly, and `guidance_at` is unused. recon_factor: the reconstructed image is the finest
    level's grid times this (CLIP's grid x 4 at stride 1: a 2-pixel cell at patch 8).
    guidance_scale: multiplies the semantic branch's (zero-initialised) output; with Adam,
    it scales how fast the guidance can grow (docs/pat.md: at 1 it stayed ~0.1 % of the
    side tokens in short runs). clip_gradient: PAT's losses (reconstruction, codebook terms)
    reach CLIP's trainable parameters through the pyramid (SAN trains CLIP's visual
    positional embedding); False: the pyramid reads CLIP detached."""

    levels: tuple[PyramidLevel, ...] = (PyramidLevel(1, 1), PyramidLevel(2, 2), PyramidLevel(3, 4))
    codebook: CodebookConfig = CodebookConfig()
    width: int = 32
    guidance_width: int = 48
    coupling: str = "loose"
    shared_decoder: bool = True
    guidance_at: int = 3
    recon_factor: int = 4
    guidance_scale: float = 1.0
    clip_gradient: bool = True
    guidance_into: str = "side"

    def __post_init__(self):
        assert self.levels, "PAT needs at least one pyramid level"
        assert all(lv.stride >= 1 for lv in self.levels), "strides are >= 1"
        assert self.coupling in COUPLINGS, f"coupling is one of {COUPLINGS}"
        assert self.guidance_into in GUIDANCE_INTO, f"guidance_into is one of {GUIDANCE_INTO}"
        assert self.recon_factor >= 1

    @property
    def layers(self) -> set[int]:
        return {lv.layer for lv in self.levels}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PatConfig":
        levels = tuple(PyramidLevel(**lv) if isinstance(lv, dict) else PyramidLevel(*lv) for lv in d["levels"])
        return cls(levels=levels, codebook=CodebookConfig(**d["codebook"]),
                   **{k: v for k, v in d.items() if k not in ("levels", "codebook")})
