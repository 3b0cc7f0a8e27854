"""Stage `caption`: TAP's text decoder learns region captions (Visual Genome format);
with `cache_embeddings` the frozen encoder runs once per image before the first step."""

from __future__ import annotations

from pathlib import Path

from tapkit.data.vg import read_vg
from tapkit.errors import UserError
from tapkit.models.tap.model import TapModel
from tapkit.runtime import Runtime
from tapkit.training.config import TrainConfig
from tapkit.training.data import CaptionBatches
from tapkit.training.embedding_cache import build_embedding_cache
from tapkit.training.stages import Stage
from tapkit.training.stages import tap


def make_batches(cfg: TrainConfig, model: TapModel, info: Runtime) -> CaptionBatches:
    d = cfg.data
    if not d.vg:
        raise UserError("stage caption needs data.vg (a Visual Genome COCO-style JSON) and data.image_root")
    if model.tokenizer is None or model.text_decoder is None:
        raise UserError("stage caption needs model.tokenizer and a model with a text decoder")
    records = read_vg(d.vg, d.image_root or Path(d.vg).parent)
    cache = None
    if cfg.cache_embeddings:
        if any(p.requires_grad for p in model.image_encoder.parameters()):
            raise UserError("cache_embeddings needs a frozen image encoder: add image_encoder to freeze")
        cache = build_embedding_cache(records, model, model.image_size, progress=info.is_main)
    return CaptionBatches(records, model.image_size, cfg.batch_images, cfg.seed, info.rank, info.world_size, d.prompts_per_image,
                          model.tokenizer, model.text_decoder.cfg.max_seq_len - 1, cache)


STAGE = Stage(build_model=tap.build_model, freeze=tap.freeze, objective=tap.objective, batches=make_batches, export=tap.export)
