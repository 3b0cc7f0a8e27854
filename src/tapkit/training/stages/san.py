"""Stage `san` of the training engine: a SAN on a frozen CLIP (only CLIP's visual
positional embedding trains, as in SAN), trained with the Mask2Former criterion on
semantic label maps: one target mask per class present, classes in
`san.exclude_classes` never targets (their pixels are ignored, like the 255 label).

Samples: an image of the data's epoch order, its short side scaled to `crop * s` with
s uniform in `san.scale`, a random `crop` x `crop` window (padding ignored), flipped
half the time; the vocabulary is every class of the dataset but the excluded ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from tapkit.data.semseg import SemsegDataset, open_dataset, read_label_map
from tapkit.errors import UserError
from tapkit.models.san.config import SanConfig
from tapkit.models.san.model import SanModel, SanOutput
from tapkit.models.san.templates import templates
from tapkit.training.config import TrainConfig
from tapkit.training.data import epoch_order, step_rng
from tapkit.training.mask_criterion import CriterionConfig, SemanticTarget, mask_classification_loss
from tapkit.training.objectives import LossOutput
from tapkit.training.stages import Stage

IGNORE = -1


@dataclass
class SanBatch:
    """images (B, 3, S, S) normalized; targets per image (training-vocabulary labels)."""

    images: torch.Tensor
    targets: list[SemanticTarget]


def san_loss(output: SanOutput, targets: list[SemanticTarget], cfg: CriterionConfig = CriterionConfig()) -> LossOutput:
    """The Mask2Former criterion on a SAN output: the prediction and every auxiliary output."""
    pairs = [(output.mask_logits, output.class_logits)] + [(a.mask_logits, a.class_logits) for a in output.aux]
    total, parts = mask_classification_loss(pairs, targets, cfg)
    return LossOutput(total, parts)


def training_vocabulary(dataset: SemsegDataset, exclude: list[str]) -> tuple[list[str], np.ndarray]:
    """-> (names trained on, lookup from dataset label value to vocabulary index, -1 ignored)."""
    unknown = sorted(set(exclude) - set(dataset.classes))
    if unknown:
        raise UserError(f"san.exclude_classes names classes the dataset does not have: {', '.join(unknown)}")
    names = [c for c in dataset.classes if c not in exclude]
    lookup = np.full(max(dataset.ignore_label, len(dataset.classes)) + 1, IGNORE, np.int64)
    for i, c in enumerate(dataset.classes):
        if c not in exclude:
            lookup[i] = names.index(c)
    return names, lookup


def crop_sample(rgb: np.ndarray, labels: np.ndarray, crop: int, scale: float, flip: bool,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scale the short side to crop * scale, take a random crop x crop window (padded
    with 0 / IGNORE), flip. -> (crop, crop, 3) uint8, (crop, crop) int64."""
    h, w = labels.shape
    factor = crop * scale / min(h, w)
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    image = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR))
    lab = np.asarray(Image.fromarray(labels.astype(np.int32)).resize((nw, nh), Image.NEAREST)).astype(np.int64)
    y0, x0 = int(rng.integers(max(nh - crop, 0) + 1)), int(rng.integers(max(nw - crop, 0) + 1))
    out_img = np.zeros((crop, crop, 3), np.uint8)
    out_lab = np.full((crop, crop), IGNORE, np.int64)
    window_img, window_lab = image[y0:y0 + crop, x0:x0 + crop], lab[y0:y0 + crop, x0:x0 + crop]
    out_img[: window_img.shape[0], : window_img.shape[1]] = window_img
    out_lab[: window_lab.shape[0], : window_lab.shape[1]] = window_lab
    if flip:
        out_img, out_lab = out_img[:, ::-1], out_lab[:, ::-1]
    return np.ascontiguousarray(out_img), np.ascontiguousarray(out_lab)


def semantic_target(labels: np.ndarray) -> SemanticTarget:
    """(H, W) vocabulary indices (IGNORE ignored) -> one mask per class present."""
    present = np.unique(labels[labels != IGNORE])
    masks = np.stack([labels == c for c in present]) if len(present) else np.zeros((0, *labels.shape), bool)
    return SemanticTarget(torch.from_numpy(present).long(), torch.from_numpy(masks).float())


class SanBatches(torch.utils.data.Dataset):
    """The batch of (step, rank): `batch_images` crops, images in the data's epoch order."""

    def __init__(self, dataset: SemsegDataset, lookup: np.ndarray, model_cfg: SanConfig, cfg: TrainConfig,
                 rank: int, world_size: int):
        from tapkit.data.records import SkipCounter

        self.dataset, self.lookup, self.san = dataset, lookup, cfg.san
        self.mean = torch.tensor(model_cfg.clip.preprocess.mean).view(3, 1, 1)
        self.std = torch.tensor(model_cfg.clip.preprocess.std).view(3, 1, 1)
        self.batch, self.seed, self.rank, self.world = cfg.batch_images, cfg.seed, rank, world_size
        self.skips = SkipCounter()

    def __len__(self) -> int:
        return 2**62

    def sample(self, step: int, slot: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.dataset.samples)
        pos = (step * self.world + self.rank) * self.batch + slot
        image_path, label_path = self.dataset.samples[epoch_order(n, self.seed, pos // n)[pos % n]]
        with Image.open(image_path) as im:
            rgb = np.asarray(im.convert("RGB"))
        raw = read_label_map(label_path)
        labels = self.lookup[np.clip(raw, 0, len(self.lookup) - 1)]
        rng = step_rng(self.seed, step, self.rank, slot + 1)
        return crop_sample(rgb, labels, self.san.crop, float(rng.uniform(*self.san.scale)),
                           bool(rng.random() < self.san.hflip_prob), rng)

    def __getitem__(self, step: int) -> SanBatch:
        samples = [self.sample(step, slot) for slot in range(self.batch)]
        images = torch.stack([torch.from_numpy(s[0]).permute(2, 0, 1).float() / 255 for s in samples])
        return SanBatch((images - self.mean) / self.std, [semantic_target(s[1]) for s in samples])


class SanObjective(nn.Module):
    """The class embeddings of the (fixed) training vocabulary are computed once by the
    frozen text tower; the learnable background joins them at every step."""

    def __init__(self, model: SanModel, tokens: torch.Tensor, num_templates: int, criterion: CriterionConfig):
        super().__init__()
        self.model, self.criterion = model, criterion
        from tapkit.models.san.classifier import text_classifier

        with torch.no_grad():
            self.register_buffer("text", text_classifier(model.clip, tokens, num_templates), persistent=False)

    def predict(self, batch: SanBatch) -> tuple[SanOutput, list[SemanticTarget]]:
        """The model's output on the batch (every supervised block) and the targets on its device."""
        device = self.text.device
        targets = [SemanticTarget(t.labels.to(device), t.masks.to(device)) for t in batch.targets]
        return self.model(batch.images.to(device), self.model.background(self.text), aux=True), targets

    def forward(self, batch: SanBatch) -> LossOutput:
        output, targets = self.predict(batch)
        return san_loss(output, targets, self.criterion)


def model_config(cfg: TrainConfig, clip_cfg) -> SanConfig:
    s = cfg.san
    return SanConfig(clip=clip_cfg, side=s.side, fusion=tuple(tuple(int(v) for v in p) for p in s.fusion),
                     recognition_start=s.recognition_start, deep_supervision=tuple(int(d) for d in s.deep_supervision),
                     clip_resolution=s.clip_resolution, decoder_width=s.decoder_width, decoder_layers=s.decoder_layers,
                     templates=s.templates, clip_pos_antialias=s.clip_pos_antialias)


def build_model(cfg: TrainConfig) -> SanModel:
    """`model.init_from` (a SAN checkpoint) to continue, else a new SAN on `san.clip`."""
    import tapkit

    if cfg.model.init_from:
        model = tapkit.load_model(cfg.model.init_from, device="cpu")
        if not isinstance(model, SanModel):
            raise UserError(f"model.init_from must be a SAN checkpoint for stage san, got a {model.family.upper()} one")
        return model.train()
    clip = tapkit.load_clip(cfg.san.clip).model
    return SanModel(model_config(cfg, clip.cfg), clip).train()


def freeze(model: SanModel, cfg: TrainConfig) -> None:
    fixed = tuple(cfg.freeze)
    for name, p in model.named_parameters():
        trainable = not name.startswith("clip.") or (cfg.san.train_clip_pos_embed and name == "clip.visual.positional_embedding")
        p.requires_grad_(trainable and not (fixed and name.startswith(fixed)))
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("every parameter is frozen: nothing to train")


def _dataset(cfg: TrainConfig) -> SemsegDataset:
    if not cfg.data.semseg:
        raise UserError("stage san needs data.semseg (a semantic-segmentation dataset root)")
    return open_dataset(cfg.san.dataset, cfg.data.semseg, split="train")


def vocabulary_tokens(model: SanModel, cfg: TrainConfig) -> tuple[torch.Tensor, int]:
    """The training vocabulary's prompts, tokenized: (C * T, L) and the number of templates T."""
    from tapkit.models.clip.build import clip_tokenizer

    names, _ = training_vocabulary(_dataset(cfg), cfg.san.exclude_classes)
    tokenizer = clip_tokenizer(cfg.san.clip or _default_clip(), None, model.clip.context_length)
    prompts = templates(model.cfg.templates)
    return tokenizer([t.format(n) for n in names for t in prompts], model.clip.context_length), len(prompts)


def objective(model: SanModel, cfg: TrainConfig) -> SanObjective:
    return SanObjective(model, *vocabulary_tokens(model, cfg), cfg.san.criterion)


def _default_clip() -> str:
    from tapkit.defaults import default_clip_dir

    return str(default_clip_dir())


def make_batches(cfg: TrainConfig, model: SanModel, rank: int, world_size: int) -> SanBatches:
    dataset = _dataset(cfg)
    _, lookup = training_vocabulary(dataset, cfg.san.exclude_classes)
    return SanBatches(dataset, lookup, model.cfg, cfg, rank, world_size)


STAGE = Stage(
    build_model=build_model,
    freeze=freeze,
    objective=objective,
    batches=lambda cfg, model, info: make_batches(cfg, model, info.rank, info.world_size),
    export=lambda model, full_state: dict(full_state),
)
