"""Segment and Caption Anything (Huang et al.): a frozen promptable segmenter, a
trainable text feature mixer, a linear projection into the language model's input
embeddings, learned task tokens, and a frozen causal language model.

For each prompt, the language model reads
    [task tokens (6), projected caption query outputs (8), caption tokens ...]
and the last prefix position predicts the first caption token (no BOS). Only the
mixer, the projection and the task tokens are trained.

The backbone is SAM (as in the paper) or TAP: anything whose `decode_with_state`
gives a `PromptedState` (decoder output tokens, updated image tokens and their
positions)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from tapkit.models.outputs import DecoderOutput, PromptedState
from tapkit.models.sca.config import TASKS, ScaConfig
from tapkit.models.sca.generation import GenerationConfig, generate
from tapkit.models.sca.mixer import TextFeatureMixer

IGNORE_INDEX = -100


@dataclass
class CaptionBatch:
    """Teacher-forcing targets: ids (N, L) caption pieces then EOS, right-padded with
    IGNORE_INDEX; task (N,) index into TASKS."""

    ids: torch.Tensor
    task: torch.Tensor


@dataclass
class CaptionLoss:
    loss: torch.Tensor
    logits: torch.Tensor  # (N, L, vocab): position t predicts ids[:, t]


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


class ScaModel(nn.Module):
    family = "sca"

    def __init__(self, cfg: ScaConfig, backbone: nn.Module, language_model: nn.Module, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        dim = self.backbone_dim(backbone)
        hidden = language_model.get_input_embeddings().weight.shape[1]
        self.mixer = TextFeatureMixer(dim, cfg.mixer)
        self.projection = nn.Linear(dim, hidden)
        self.task_tokens = nn.Embedding(len(TASKS) * cfg.num_task_tokens, hidden)
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.generation = GenerationConfig(max_new_tokens=cfg.max_new_tokens)
        self.everything_defaults: dict = {}
        freeze(self.backbone)
        freeze(self.language_model)

    @staticmethod
    def backbone_dim(backbone: nn.Module) -> int:
        decoder = getattr(backbone, "mask_decoder", None) or getattr(backbone, "image_decoder")
        return decoder.iou_token.weight.shape[1]

    def train(self, mode: bool = True):
        """Frozen parts stay in eval mode (no dropout) while the mixer trains."""
        super().train(mode)
        self.backbone.eval()
        self.language_model.eval()
        return self

    # --- the model interface of every family -------------------------------------

    @property
    def protocol(self):
        return self.backbone.protocol

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    @property
    def device(self) -> torch.device:
        return self.projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projection.weight.dtype

    @property
    def concepts(self):
        return self.backbone.concepts

    @property
    def can_name(self) -> bool:
        return self.backbone.can_name

    @property
    def can_caption(self) -> bool:
        return self.tokenizer is not None

    @property
    def max_caption_tokens(self) -> int:
        return self.generation.max_new_tokens

    def set_max_caption_tokens(self, n: int) -> None:
        room = self.language_model.config.max_position_embeddings - self.cfg.num_task_tokens - self.cfg.mixer.num_queries
        if not 1 <= n <= room:
            raise ValueError(f"captions of this SCA can have 1 to {room} tokens (its language model's positions), not {n}")
        self.generation = dataclasses.replace(self.generation, max_new_tokens=n)

    @property
    def encoder_config(self):
        return self.backbone.encoder_config

    @property
    def text_decoder(self) -> nn.Module:
        """SCA's text decoder is its frozen causal language model."""
        return self.language_model

    def encode_image(self, batch: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image(batch)

    def decode_with_state(self, image_embed: torch.Tensor, xy: torch.Tensor, labels: torch.Tensor) -> PromptedState:
        return self.backbone.decode_with_state(image_embed, xy, labels)

    def decode(self, image_embed: torch.Tensor, xy: torch.Tensor, labels: torch.Tensor) -> DecoderOutput:
        """The backbone's masks, with the mixer's caption queries (N, M, Q, C) as
        `sem_tokens` (one caption per prompt, whichever mask answers it)."""
        state = self.decode_with_state(image_embed, xy, labels)
        queries = self.mixer(state)
        n, m = state.output.iou.shape
        out = state.output
        return DecoderOutput(out.mask_logits, out.iou, queries.unsqueeze(1).expand(n, m, -1, -1), out.sem_embeds)

    @torch.inference_mode()
    def caption(self, sem_tokens: torch.Tensor, task: str = "caption") -> list[str | None]:
        """Captions for caption queries (N, Q, C), decoded as `self.generation` says."""
        if self.tokenizer is None:
            return [None] * sem_tokens.shape[0]
        prefix = self.prefix(sem_tokens, torch.full((sem_tokens.shape[0],), TASKS.index(task), device=sem_tokens.device))
        ids = generate(self.language_model, prefix, self.tokenizer.eos_id, self.generation)
        return [self.tokenizer.decode(seq) for seq in ids]

    # --- captioning --------------------------------------------------------------

    def prefix(self, queries: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """(N, Q, C) caption queries and (N,) task indices -> (N, T + Q, H) the language
        model's input prefix: the task's tokens, then the projected queries."""
        lm_dtype = self.language_model.get_input_embeddings().weight.dtype
        t = self.cfg.num_task_tokens
        tasks = self.task_tokens.weight.view(len(TASKS), t, -1)[task.to(self.device)]
        projected = self.projection(queries.to(self.projection.weight.dtype))
        return torch.cat([tasks, projected], dim=1).to(lm_dtype)

    def caption_loss(self, queries: torch.Tensor, batch: CaptionBatch, label_smoothing: float = 0.1) -> CaptionLoss:
        """Cross-entropy (with label smoothing) of the captions given the caption queries."""
        prefix = self.prefix(queries, batch.task)
        ids = batch.ids.to(self.device)
        inputs = ids[:, :-1].clamp(min=0)  # padding positions are fed but never predicted from
        embeds = torch.cat([prefix, self.language_model.get_input_embeddings()(inputs)], dim=1)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        mask[:, prefix.shape[1] :] = ids[:, :-1].ne(IGNORE_INDEX).long()
        logits = self.language_model(inputs_embeds=embeds, attention_mask=mask).logits
        logits = logits[:, prefix.shape[1] - 1 :].float()
        loss = F.cross_entropy(logits.transpose(1, 2), ids, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
        return CaptionLoss(loss, logits)

    # --- weights -----------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parts: mixer, projection, task tokens."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("mixer.", "projection.", "task_tokens."))}

    def learned_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything, backbone under `backbone.` in its family's naming, the language
        model under `language_model.` in transformers' naming."""
        state = {f"backbone.{k}": v for k, v in self.backbone.learned_state_dict().items()}
        state.update(self.trainable_state_dict())
        # A tied output embedding is stored once (it is re-tied when the model is built).
        unique = dict(self.language_model.named_parameters())
        every = {name for name, _ in self.language_model.named_parameters(remove_duplicate=False)}
        for k, v in self.language_model.state_dict().items():
            if k in unique or k not in every:
                state[f"language_model.{k}"] = v
        return state
