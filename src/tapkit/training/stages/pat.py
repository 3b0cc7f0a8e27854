"""Stage `pat` of the training engine: a SAN with PAT's feature-pyramid tokenizer
(`SanConfig.pat`, docs/pat.md), trained on semantic label maps like stage `san` (same
batches, CLIP frozen, SAN's criterion) plus PAT's terms: L1 reconstruction of the image
by the pixel branch (`pat.recon_weight`) and the codebooks' commitment / codebook terms
(`pat.codebook_weight`). Each level's codebook use and perplexity are logged.

`model.init_from` a SAN checkpoint builds the PAT on it: SAN's weights are kept and
the tokenizer starts fresh with its guidance at zero, so the PAT starts as that SAN.
A PAT checkpoint continues as it is."""

from __future__ import annotations

import dataclasses

import torch

from tapkit.errors import UserError
from tapkit.models.san.model import SanModel
from tapkit.models.san.pat.losses import reconstruction_loss
from tapkit.training.config import PatTrainConfig, TrainConfig
from tapkit.training.mask_criterion import CriterionConfig
from tapkit.training.objectives import LossOutput
from tapkit.training.stages import Stage, san
from tapkit.training.stages.san import SanBatch, SanObjective, san_loss


class PatObjective(SanObjective):
    def __init__(self, model: SanModel, tokens: torch.Tensor, num_templates: int, criterion: CriterionConfig,
                 weights: PatTrainConfig):
        super().__init__(model, tokens, num_templates, criterion)
        self.weights = weights

    def forward(self, batch: SanBatch) -> LossOutput:
        output, targets = self.predict(batch)
        seg = san_loss(output, targets, self.criterion)
        pat = output.pat
        recon = reconstruction_loss(pat.reconstruction, batch.images.to(pat.reconstruction.device))
        total = seg.total + self.weights.recon_weight * recon + self.weights.codebook_weight * pat.codebook_loss
        parts = {**seg.parts, "loss_recon": float(recon.detach()), "loss_codebook": float(pat.codebook_loss.detach())}
        for level, (usage, perplexity) in enumerate(zip(pat.usage, pat.perplexity), start=1):
            parts[f"code_usage_{level}"], parts[f"code_perplexity_{level}"] = usage, perplexity
        return LossOutput(total, parts)


def with_pat(model: SanModel, cfg: TrainConfig) -> SanModel:
    """A PAT on `model`'s SAN: its weights (CLIP included) kept, the tokenizer new."""
    try:
        pat_cfg = dataclasses.replace(model.cfg, pat=cfg.pat.model_config())
    except AssertionError as err:
        raise UserError(f"stage pat: {err}") from None
    pat_model = SanModel(pat_cfg, model.clip)
    missing, unexpected = pat_model.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("pat.") for k in missing), (missing, unexpected)
    return pat_model


def build_model(cfg: TrainConfig) -> SanModel:
    """`model.init_from` a SAN (PAT added) or a PAT (continued as it is), else a new PAT on `san.clip`."""
    model = san.build_model(cfg)
    return (model if model.cfg.pat is not None else with_pat(model, cfg)).train()


def objective(model: SanModel, cfg: TrainConfig) -> PatObjective:
    return PatObjective(model, *san.vocabulary_tokens(model, cfg), cfg.san.criterion, cfg.pat)


STAGE = Stage(
    build_model=build_model,
    freeze=san.freeze,
    objective=objective,
    batches=san.STAGE.batches,
    export=san.STAGE.export,
)
