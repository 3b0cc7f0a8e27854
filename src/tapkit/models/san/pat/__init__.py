"""PAT (Feature Pyramid Tokenization, seed 004) as a SAN variant: `SanConfig.pat`
holds a `PatConfig`; the tokenizer (pyramid, codebooks, pixel and semantic branches)
adds its guidance to SAN's side network. See docs/pat.md."""

from tapkit.models.san.pat.config import CodebookConfig, PatConfig, PyramidLevel
from tapkit.models.san.pat.tokenizer import FeaturePyramidTokenizer, PatOutput

__all__ = ["CodebookConfig", "FeaturePyramidTokenizer", "PatConfig", "PatOutput", "PyramidLevel"]
