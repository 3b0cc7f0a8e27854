"""Stage `clip` of the training engine: a CLIP trained contrastively on an annotated
image set (SA-1B format with `concept` and `caption` on each region, e.g. the
synthetic world).

Each sample is either a crop around one region, paired with its concept name, a
prompt template of it, or its caption up to the concept ('a small striped red
circle'), or the whole image, paired with a list of its concepts or one region's full
caption. Samples that mean the same thing (crops of one concept) are all positives of
each other: the targets of the symmetric cross-entropy are spread over them, so the
48 names' many repeats in a batch are not pushed apart. Under DDP each rank's loss
is over its own batch (gradients are averaged)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from tapkit.data.crops import square_crop
from tapkit.data.records import ImageRecord, Region, SkipCounter, load_rgb
from tapkit.data.text_encoders import DEFAULT_TEMPLATES
from tapkit.errors import UserError
from tapkit.models.clip.config import ClipConfig
from tapkit.models.clip.model import ClipModel
from tapkit.models.clip.preprocess import preprocess
from tapkit.models.clip.tokenizer import ClipTokenizer
from tapkit.models.san.recognition import biased_block, clip_features, pool_bias, recognize
from tapkit.training.config import TrainConfig
from tapkit.training.data import epoch_order, step_rng
from tapkit.training.objectives import LossOutput
from tapkit.training.stages import Stage


@dataclass
class ClipBatch:
    """images (P, 3, S, S) normalized crops and scenes; region_images (M, 3, S', S') whole
    images, each with up to K region samples: region_bias (M, K, g, g) their attention
    biases on the CLIP grid, region_valid (M, K) bool which of the K slots are samples
    (R of them in all); tokens (P + R, L), the crops' texts first, then the regions' in
    (image, slot) order; positives (P + R, P + R) bool, [i, j] when sample i's image and
    sample j's text mean the same thing (the diagonal included)."""

    images: torch.Tensor | None
    tokens: torch.Tensor
    positives: torch.Tensor
    region_images: torch.Tensor | None = None
    region_bias: torch.Tensor | None = None
    region_valid: torch.Tensor | None = None
    region_owner: torch.Tensor | None = None  # (M, g*g) the sample whose region covers the patch most (>= half), or -1
    # The vocabulary term: name_tokens (V * T, L) every concept name in every template
    # (name-major); name_index (P + R,) each sample's concept among the V names, -1 for scenes.
    name_tokens: torch.Tensor | None = None
    name_index: torch.Tensor | None = None


def region_coverage(mask: np.ndarray, grid: int, size: int) -> torch.Tensor:
    """(H, W) bool -> (grid, grid): the share of each patch of the image at `size` px the
    region covers."""
    m = torch.from_numpy(np.array(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR)))
    return F.adaptive_avg_pool2d(m.float()[None, None] / 255, grid)[0, 0]


def region_bias(mask: np.ndarray, grid: int, size: int) -> torch.Tensor:
    """(H, W) bool -> (grid, grid) additive bias: 0 on patches the region covers at least
    30 % of (and on its best-covered patch), -100 elsewhere."""
    frac = region_coverage(mask, grid, size)
    keep = (frac >= 0.3) | (frac == frac.max())
    return torch.where(keep, 0.0, -100.0)


def caption_head(region: Region) -> str:
    """The region's caption up to its concept ('a small striped red circle' of
    'a small striped red circle left of a blue star'), or 'a <concept>'."""
    caption, concept = region.caption or "", region.concept
    at = caption.find(concept)
    return caption[: at + len(concept)] if at >= 0 else f"a {concept}"


def crop_text(region: Region, rng: np.random.Generator) -> str:
    choice = int(rng.integers(4))
    if choice == 0:
        return region.concept
    if choice == 1:
        return DEFAULT_TEMPLATES[int(rng.integers(len(DEFAULT_TEMPLATES)))].format(region.concept)
    if choice == 2:
        return caption_head(region)
    return f"a {region.concept}"


def scene_text(regions: list[Region], rng: np.random.Generator) -> str:
    """'a red circle, a blue star and a green square' (up to 3, in random order), or one
    region's full caption."""
    captioned = [r for r in regions if r.caption]
    if captioned and rng.random() < 0.5:
        return captioned[int(rng.integers(len(captioned)))].caption
    names = [f"a {regions[k].concept}" for k in rng.permutation(len(regions))[:3]]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class ClipBatches(torch.utils.data.Dataset):
    """The batch of (step, rank): `batch_images` samples, one per image in the data's
    epoch order; images without a named region and unreadable ones are skipped."""

    def __init__(self, records: list[ImageRecord], model_cfg: ClipConfig, tokenizer: ClipTokenizer, cfg: TrainConfig,
                 rank: int, world_size: int):
        self.records = [r for r in records if any(reg.concept for reg in r.regions)]
        if not self.records:
            raise UserError("stage clip needs regions with a `concept` name (SA-1B JSON with concept annotations)")
        self.model_cfg, self.tokenizer, self.clip = model_cfg, tokenizer, cfg.clip
        self.batch, self.seed, self.rank, self.world = cfg.batch_images, cfg.seed, rank, world_size
        self.skips = SkipCounter()
        self.names = sorted({reg.concept for r in self.records for reg in r.regions if reg.concept})
        self.name_ids = {n: i for i, n in enumerate(self.names)}
        self.name_tokens = (tokenizer([t.format(n) for n in self.names for t in DEFAULT_TEMPLATES])
                            if self.clip.names_loss_weight > 0 else None)

    def __len__(self) -> int:
        return 2**62

    def _image(self, step: int, slot: int) -> tuple[ImageRecord, np.ndarray]:
        n = len(self.records)
        position = (step * self.world + self.rank) * self.batch + slot
        for tries in range(50):
            pos = position + tries * self.batch * self.world
            record = self.records[epoch_order(n, self.seed, pos // n)[pos % n]]
            rgb = load_rgb(record.path, self.skips)
            if rgb is not None:
                return record, rgb
        raise RuntimeError(f"too many unreadable images ({self.skips.examples})")

    def sample(self, step: int, slot: int) -> tuple[np.ndarray, list[str], list[str], list[np.ndarray] | None]:
        """-> (image, texts, meanings, region masks): one text for a crop or a scene, up
        to `regions_per_image` for a region sample (its regions in random order, each with
        its mask); a meaning is the concept of a crop or a region, the text of a scene."""
        record, rgb = self._image(step, slot)
        rng = step_rng(self.seed, step, self.rank, slot + 1)
        regions = [r for r in record.regions if r.concept]
        if self.clip.region_prob and rng.random() < self.clip.region_prob:
            keep = self.clip.regions_per_image or len(regions)
            chosen = [regions[int(k)] for k in rng.permutation(len(regions))[:keep]]
            masks = [r.mask(rgb.shape[0], rgb.shape[1]) for r in chosen]
            if rng.random() < self.clip.region_hflip_prob:
                rgb, masks = rgb[:, ::-1], [m[:, ::-1] for m in masks]
            turns = self._turns(rng)
            rgb, masks = np.rot90(rgb, turns), [np.rot90(m, turns) for m in masks]
            return rgb, [crop_text(r, rng) for r in chosen], [r.concept for r in chosen], masks
        if rng.random() < self.clip.scene_prob:
            text = scene_text(regions, rng)
            return rgb, [text], [text], None
        region = regions[int(rng.integers(len(regions)))]
        crop = square_crop(rgb, region.bbox, rng.uniform(*self.clip.crop_margin), tuple(rng.uniform(-0.1, 0.1, 2)))
        if rng.random() < self.clip.hflip_prob:
            crop = crop[:, ::-1]
        return np.rot90(crop, self._turns(rng)), [crop_text(region, rng)], [region.concept], None

    def _turns(self, rng: np.random.Generator) -> int:
        """Quarter turns for a crop or region sample: 0 unless rot90_prob draws 1-3. No
        draw is made at rot90_prob 0, so older configs' samples are unchanged."""
        if not self.clip.rot90_prob or rng.random() >= self.clip.rot90_prob:
            return 0
        return int(rng.integers(1, 4))

    def __getitem__(self, step: int) -> ClipBatch:
        drawn = [self.sample(step, slot) for slot in range(self.batch)]
        plain = [s for s in drawn if s[3] is None]
        regions = [s for s in drawn if s[3] is not None]
        size, pre = self.model_cfg.vision.image_size, self.model_cfg.preprocess
        images = torch.stack([preprocess(np.ascontiguousarray(s[0]), size, pre) for s in plain]) if plain else None
        region_images = biases = valid = owner = None
        if regions:
            rsize, grid = self.clip.region_size, self.clip.region_size // self.model_cfg.vision.patch_size
            region_images = torch.stack([preprocess(Image.fromarray(np.ascontiguousarray(s[0])).resize((rsize, rsize),
                                                                                                       Image.BICUBIC), rsize, pre)
                                         for s in regions])
            most = max(len(s[3]) for s in regions)
            biases = torch.full((len(regions), most, grid, grid), -100.0)
            valid = torch.zeros(len(regions), most, dtype=torch.bool)
            owner = torch.full((len(regions), grid * grid), -1, dtype=torch.long)
            first = sum(len(s[1]) for s in plain)  # the batch index of the first region sample
            for i, s in enumerate(regions):
                cover = torch.stack([region_coverage(mask, grid, rsize).flatten() for mask in s[3]])
                for k, mask in enumerate(s[3]):
                    keep = (cover[k] >= 0.3) | (cover[k] == cover[k].max())
                    biases[i, k], valid[i, k] = torch.where(keep, 0.0, -100.0).view(grid, grid), True
                best, which = cover.max(0)
                owner[i] = torch.where(best >= 0.5, first + which, -1)
                first += len(s[3])
        texts = [t for s in plain + regions for t in s[1]]
        meanings = [m for s in plain + regions for m in s[2]]
        # Positives: the same meaning, or the same words (a one-shape scene's "a red circle").
        positives = torch.tensor([[ma == mb or ta == tb for mb, tb in zip(meanings, texts)] for ma, ta in zip(meanings, texts)])
        name_index = None
        if self.name_tokens is not None:
            name_index = torch.tensor([self.name_ids.get(m, -1) for m in meanings])
        return ClipBatch(images, self.tokenizer(texts), positives, region_images, biases, valid, owner,
                         self.name_tokens, name_index)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, positives: torch.Tensor):
    """Symmetric cross-entropy of scaled cosine similarities, each row's target spread
    evenly over its positives. image, text (B, D) normalized -> (loss, logits (B, B))."""
    logits = scale * image @ text.t()
    target = positives.float() / positives.float().sum(1, keepdim=True)
    loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target.t() * F.log_softmax(logits.t(), 1), 1).mean())
    return loss, logits


def region_embeddings(model: ClipModel, images: torch.Tensor, bias: torch.Tensor, start: int) -> torch.Tensor:
    """SAN's recognition of K regions per image in one pass over it: images (M, 3, S, S),
    bias (M, K, g, g) -> (M, K, D) L2-normalised."""
    visual = model.visual
    heads_bias = bias[:, None].expand(-1, visual.heads, -1, -1, -1)
    return recognize(visual, start, clip_features(visual, images, set(), start), heads_bias)


def regions_and_patches(model: ClipModel, images: torch.Tensor, bias: torch.Tensor,
                        start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """region_embeddings, and every patch token after the last block through ln_post and
    proj: (M, K, D), (M, g*g, D), both L2-normalised."""
    visual = model.visual
    features = clip_features(visual, images, set(), start)
    attn_bias = pool_bias(bias[:, None].expand(-1, visual.heads, -1, -1, -1), features.grid)
    x = features.tokens
    queries = x[:, :1].expand(-1, bias.shape[1], -1)
    for block in visual.transformer.resblocks[start:]:
        queries = biased_block(block, queries, x[:, 1:], attn_bias)
        x = block(x)
    return F.normalize(visual.head(queries), dim=-1), F.normalize(visual.head(x[:, 1:]), dim=-1)


class ClipObjective(nn.Module):
    """The temperature is capped at 100, as open_clip clamps it. `patch_weight` > 0 adds a
    dense term on region samples: each patch a region covers at least half of is an image
    of that region's meaning against the batch's texts (patch -> text cross-entropy, the
    targets spread over the positives), so the patches the mask bias lets the recognition
    tokens see carry what the region is."""

    def __init__(self, model: ClipModel, region_start: int = 3, patch_weight: float = 0.0, names_weight: float = 0.0,
                 contrastive_weight: float = 1.0):
        super().__init__()
        self.model, self.region_start, self.patch_weight = model, region_start, patch_weight
        self.names_weight, self.contrastive_weight = names_weight, contrastive_weight

    def forward(self, batch: ClipBatch) -> LossOutput:
        device = self.model.logit_scale.device
        parts = [F.normalize(self.model.encode_image(batch.images.to(device)), dim=-1)] if batch.images is not None else []
        patches = None
        if batch.region_images is not None:
            images, bias = batch.region_images.to(device), batch.region_bias.to(device)
            if self.patch_weight > 0:
                regions, patches = regions_and_patches(self.model, images, bias, self.region_start)
            else:
                regions = region_embeddings(self.model, images, bias, self.region_start)
            parts.append(regions[batch.region_valid.to(device)])
        image = torch.cat(parts)
        scale = self.model.logit_scale.exp().clamp(max=100.0)
        positives = batch.positives.to(device)
        parts_out = {"logit_scale": float(scale.detach())}
        total = image.sum() * 0.0  # keeps the graph when a batch has no term (e.g. scenes only, no contrastive)
        text = None
        if self.contrastive_weight > 0 or patches is not None:  # patches only exist for the dense term
            text = F.normalize(self.model.encode_text(batch.tokens.to(device)), dim=-1)
        if self.contrastive_weight > 0:
            loss, logits = contrastive_loss(image, text, scale, positives)
            right = positives[torch.arange(len(positives), device=device), logits.argmax(1)].float().mean()
            parts_out["contrastive"], parts_out["image_to_text_top1"] = float(loss.detach()), float(right)
            total = total + self.contrastive_weight * loss
        if patches is not None:
            owner = batch.region_owner.to(device)
            owned = owner >= 0
            if owned.any():
                target = positives[owner[owned]].float()
                target = target / target.sum(1, keepdim=True)
                patch_logits = scale * patches[owned] @ text.t()
                dense = torch.sum(-target * F.log_softmax(patch_logits, 1), 1).mean()
                total = total + self.patch_weight * dense
                parts_out["patch"] = float(dense.detach())
                parts_out["patch_top1"] = float(target.gather(1, patch_logits.argmax(1, keepdim=True)).gt(0).float().mean())
        if self.names_weight > 0 and batch.name_tokens is not None:
            term = self._names_term(image, batch, scale)
            if term is not None:
                total = total + self.names_weight * term[0]
                parts_out["names"], parts_out["names_top1"] = float(term[0].detach()), term[1]
        return LossOutput(total, parts_out)

    def _names_term(self, image: torch.Tensor, batch: ClipBatch, scale: torch.Tensor):
        """Cross-entropy of each named sample against every name's template-mean text
        embedding (gradients reach both towers) -> (loss, top-1), or None without named samples."""
        device = image.device
        index = batch.name_index.to(device)
        named = index >= 0
        if not named.any():
            return None
        texts = F.normalize(self.model.encode_text(batch.name_tokens.to(device)), dim=-1)
        per_name = F.normalize(texts.view(-1, len(DEFAULT_TEMPLATES), texts.shape[-1]).mean(1), dim=-1)
        logits = scale * image[named] @ per_name.t()
        loss = F.cross_entropy(logits, index[named])
        return loss, float((logits.argmax(1) == index[named]).float().mean())


def build_model(cfg: TrainConfig) -> ClipModel:
    """A new CLIP of `clip`'s architecture, or `model.init_from` (a CLIP checkpoint in any
    layout tapkit reads) to continue training it."""
    c = cfg.clip
    if cfg.model.init_from:
        from tapkit.models.clip.build import clip_from_checkpoint, read_clip_checkpoint

        return clip_from_checkpoint(read_clip_checkpoint(cfg.model.init_from)).train()
    tokenizer = ClipTokenizer.from_dir(_tokenizer_dir(cfg), c.text.context_length)
    text = dataclasses.replace(c.text, vocab_size=tokenizer.vocab_size)
    return ClipModel(ClipConfig(c.embed_dim, c.vision, text, c.quick_gelu)).train()


def _tokenizer_dir(cfg: TrainConfig) -> str:
    if not cfg.clip.tokenizer:
        raise UserError("stage clip needs clip.tokenizer (a folder with vocab.json and merges.txt)")
    return cfg.clip.tokenizer


def make_batches(cfg: TrainConfig, model: ClipModel, rank: int, world_size: int) -> ClipBatches:
    from tapkit.data.sa1b import read_sa1b

    if not cfg.data.sa1b:
        raise UserError("stage clip needs data.sa1b (an SA-1B directory with concept and caption annotations)")
    tokenizer = ClipTokenizer.from_dir(_tokenizer_dir(cfg), model.context_length)
    if tokenizer.vocab_size > model.cfg.text.vocab_size:
        raise UserError(f"clip.tokenizer has {tokenizer.vocab_size} ids but the CLIP's text tower {model.cfg.text.vocab_size}")
    return ClipBatches(read_sa1b(cfg.data.sa1b), model.cfg, tokenizer, cfg, rank, world_size)


def freeze(model: ClipModel, cfg: TrainConfig) -> None:
    fixed = tuple(cfg.freeze)
    for name, p in model.named_parameters():
        p.requires_grad_(not (fixed and name.startswith(fixed)))
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("every parameter is frozen: nothing to train")


STAGE = Stage(
    build_model=build_model,
    freeze=freeze,
    objective=lambda model, cfg: ClipObjective(model, cfg.clip.region_start, cfg.clip.patch_loss_weight,
                                               cfg.clip.names_loss_weight, cfg.clip.contrastive_weight),
    batches=lambda cfg, model, info: make_batches(cfg, model, info.rank, info.world_size),
    export=lambda model, full_state: dict(full_state),
)
