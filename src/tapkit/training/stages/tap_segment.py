"""Stage `segment`: TAP's promptable segmentation and concept prediction on SA-1B
(with SemanticSA-1B concept targets when `data.semantic` is given)."""

from __future__ import annotations

from tapkit.data.sa1b import read_sa1b
from tapkit.data.semantic import SemanticTargets
from tapkit.errors import UserError
from tapkit.models.tap.model import TapModel
from tapkit.runtime import Runtime
from tapkit.training.config import TrainConfig
from tapkit.training.data import SegmentBatches
from tapkit.training.stages import Stage
from tapkit.training.stages import tap


def make_batches(cfg: TrainConfig, model: TapModel, info: Runtime) -> SegmentBatches:
    d = cfg.data
    if not d.sa1b:
        raise UserError("stage segment needs data.sa1b (an SA-1B directory)")
    semantic = SemanticTargets.load(d.semantic) if d.semantic else None
    if semantic is not None and model.concepts is None:
        raise UserError("data.semantic is set but model.concepts is not: the concept loss needs the concept file")
    n_concepts = len(model.concepts) if model.concepts is not None else 0
    return SegmentBatches(read_sa1b(d.sa1b), model.image_size, cfg.batch_images, cfg.seed, info.rank, info.world_size,
                          d.prompts_per_image, semantic, n_concepts)


STAGE = Stage(build_model=tap.build_model, freeze=tap.freeze, objective=tap.objective, batches=make_batches, export=tap.export)
