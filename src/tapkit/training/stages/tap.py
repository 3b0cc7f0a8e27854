"""What TAP's two training stages (segment, caption) share: the model they build, which
parameters train, the objective and the exported tensors."""

from __future__ import annotations

from torch import nn

from tapkit.errors import UserError
from tapkit.loading import load_model
from tapkit.models.tap.concepts import ConceptVocabulary
from tapkit.models.tap.model import TapModel, is_derived_key
from tapkit.models.tap.tokenizer import TextTokenizer
from tapkit.training.config import TrainConfig
from tapkit.training.objectives import TapObjective


def build_model(cfg: TrainConfig) -> TapModel:
    m = cfg.model
    tokenizer = TextTokenizer(m.tokenizer) if m.tokenizer else None
    concepts = ConceptVocabulary.load(m.concepts) if m.concepts else None
    if m.init_from:
        return load_model(m.init_from, tokenizer=tokenizer, concepts=concepts, device="cpu").train()
    tap_cfg = m.tap_config(tokenizer.n_words if tokenizer else None)
    if concepts is not None and concepts.embed_dim != tap_cfg.image_decoder.sem_embed_dim:
        raise UserError(f"concept embeddings are {concepts.embed_dim}-d but model.image_decoder.sem_embed_dim "
                        f"is {tap_cfg.image_decoder.sem_embed_dim}")
    return TapModel(tap_cfg, tokenizer, concepts).train()


def freeze(model: TapModel, cfg: TrainConfig) -> None:
    """Stage segment never trains the text decoder; `freeze` prefixes are fixed too.
    Fully frozen sub-modules run in eval mode (batch norm statistics stay put)."""
    prefixes = tuple(cfg.freeze) + (("text_decoder",) if cfg.stage == "segment" else ())
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(prefixes))
    for child in model.children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            child.eval()
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("every parameter is frozen: nothing to train")


def objective(model: TapModel, cfg: TrainConfig) -> nn.Module:
    return TapObjective(model, cfg.loss, cfg.interactive_prob, cfg.caption_point_prob, distillation_teacher(model, cfg))


def distillation_teacher(model: TapModel, cfg: TrainConfig) -> TapModel | None:
    """Stage caption with `loss.distill`: model.init_from loaded again and frozen, so a
    resumed run distils towards the same decoder as the run it continues."""
    if cfg.stage != "caption" or not cfg.loss.distill:
        return None
    if not cfg.model.init_from:
        raise UserError("loss.distill keeps the image decoder near model.init_from's: set model.init_from")
    teacher = load_model(cfg.model.init_from, device="cpu").to(model.device)
    teacher.text_decoder = None
    return teacher


def export(model: TapModel, full_state: dict) -> dict:
    """The official naming, less the constants the model derives (pixel mean and std...)."""
    return {k: v for k, v in full_state.items() if not is_derived_key(k)}
