"""Training configuration: typed dataclasses that a YAML file maps onto one to one.

Unknown keys are errors, so a typo never silently trains with a default."""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

from tapkit.errors import UserError
from tapkit.models.clip.config import TextConfig, VisionConfig
from tapkit.models.san.config import SideConfig
from tapkit.models.san.pat.config import CodebookConfig, PatConfig, PyramidLevel
from tapkit.models.sca.config import MixerConfig
from tapkit.models.tap.config import ImageDecoderConfig, ImageEncoderConfig, TapConfig, TextDecoderConfig
from tapkit.training.mask_criterion import CriterionConfig


@dataclass
class DataConfig:
    sa1b: str | None = None  # SA-1B directory (stage segment)
    semantic: str | None = None  # SemanticSA-1B shards (concept targets)
    semseg: str | None = None  # semantic label maps (stage san): the dataset root
    vg: str | None = None  # Visual Genome COCO-style JSON (stages caption, sca)
    image_root: str | None = None  # images of the VG JSON
    detection: str | None = None  # COCO-style instances (stage sca: class names as recognition-task captions)
    detection_root: str | None = None  # images of the detection JSON
    prompts_per_image: int = 16
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    schedule: str = "cosine"  # cosine (to lr * min_lr_ratio) or poly (SAN / detectron2's WarmupPolyLR, power 0.9)


@dataclass
class LossConfig:
    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    concept: float = 1.0
    caption: float = 1.0
    label_smoothing: float = 0.1
    # Stage caption, when the image decoder trains: keep its masks, mask scores and concept
    # logits near those of model.init_from's decoder (a frozen copy), weight `distill`.
    distill: float = 0.0
    # Stage caption: the text decoder's output at the semantic token's position predicts
    # which tokenizer pieces the caption holds (multi-label), weight `words`: a direct
    # signal to the semantic token for every word, the related shape's included.
    words: float = 0.0
    # Stage caption: one head (the first) of the final token -> image attention of the
    # routed semantic token is taught to look at the nearest other region (its box,
    # cross-entropy to a uniform target over the box's cells), weight `neighbour`: the
    # relation's 'related shape' is the nearest other one, which the caption loss alone
    # did not teach it to find.
    neighbour: float = 0.0


@dataclass
class ModelConfig:
    """Either `init_from` (a checkpoint: its architecture is used) or the architecture."""

    init_from: str | None = None
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    image_decoder: ImageDecoderConfig = field(default_factory=ImageDecoderConfig)
    text_decoder: TextDecoderConfig | None = None
    tokenizer: str | None = None
    concepts: str | None = None

    def tap_config(self, vocab_size: int | None) -> TapConfig:
        text = self.text_decoder
        if text is not None and vocab_size is not None:
            text = dataclasses.replace(text, vocab_size=vocab_size)
        return TapConfig(self.image_encoder, self.image_decoder, text)


@dataclass
class ScaTrainConfig:
    """Stage sca: a text feature mixer trained on a frozen segmenter and a frozen causal LM."""

    backbone: str | None = None  # checkpoint of the frozen segmenter (SAM .pth, TAP .pkl / .safetensors)
    language_model: str | None = None  # transformers model directory (save_pretrained) of the frozen LM
    tokenizer: str | None = None  # its tokenizer: HF directory or SentencePiece .model (default: language_model)
    mixer: MixerConfig = field(default_factory=MixerConfig)
    num_task_tokens: int = 6
    max_caption_tokens: int = 19  # caption pieces + EOS (SCA: model_max_length 20, less the virtual BOS)
    lsj: tuple[float, float] | None = (0.1, 2.0)  # large-scale jitter range (null: fit only)
    hflip_prob: float = 0.0  # the paper flips; captions with left/right relations would then be wrong
    recognition_prob: float = 0.0  # with detection data: chance a step's image comes from it


@dataclass
class ClipTrainConfig:
    """Stage clip: a CLIP trained contrastively on crops and whole images with names and captions."""

    tokenizer: str | None = None  # folder with vocab.json + merges.txt (text.vocab_size is read from it)
    embed_dim: int = 256
    vision: VisionConfig = field(default_factory=lambda: VisionConfig(64, 8, 128, 6, 4))
    text: TextConfig = field(default_factory=lambda: TextConfig(32, 0, 128, 4, 4))
    quick_gelu: bool = False
    scene_prob: float = 0.25  # chance a sample is the whole image rather than a crop around one region
    crop_margin: tuple[float, float] = (1.15, 1.7)  # crop side / the region box's longer side
    hflip_prob: float = 0.5  # crops only (scene captions say left and right)
    # Region samples, in the regime SAN recognises in: the whole image at region_size, the
    # class token entering block region_start copied and run through the last blocks with
    # one region's mask as its attention bias, paired with the region's text. One pass over
    # the image recognises up to regions_per_image of its regions (0: all), one extra token
    # each, as SAN recognises its queries; the image is flipped with region_hflip_prob.
    region_prob: float = 0.0
    region_size: int = 128
    region_start: int = 3
    regions_per_image: int = 1
    region_hflip_prob: float = 0.0
    # Weight of the dense term on region samples' patches (stage clip's ClipObjective).
    patch_loss_weight: float = 0.0
    # Weight of the vocabulary term: every crop and region sample is also classified among
    # all the data's concept names (each the normalized mean over the photo templates of its
    # text embeddings, as zero-shot classifiers and concept files are built), so every name
    # of the same colour is a negative at every step, not only those the batch happens to hold.
    names_loss_weight: float = 0.0
    # Weight of the contrastive term (0 leaves only the dense and vocabulary terms: the batch's
    # texts are then not encoded at all).
    contrastive_weight: float = 1.0
    # Chance a crop or region sample is turned by a random multiple of 90 degrees (its masks
    # with it): the world draws shapes at any angle, and their texts say nothing of direction.
    # Scenes are never turned (their captions say left and right).
    rot90_prob: float = 0.0

    def __post_init__(self):
        for name in ("names_loss_weight", "contrastive_weight", "patch_loss_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"clip.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.rot90_prob <= 1:
            raise UserError(f"clip.rot90_prob must be in [0, 1], got {self.rot90_prob}")
        if self.contrastive_weight == 0 and self.names_loss_weight == 0 and self.patch_loss_weight == 0:
            raise UserError("stage clip needs a loss: clip.contrastive_weight, names_loss_weight or patch_loss_weight > 0")
        if self.regions_per_image < 0:
            raise UserError(f"clip.regions_per_image must be 0 (all) or more, got {self.regions_per_image}")


@dataclass
class SanTrainConfig:
    """Stage san: a SAN on a frozen CLIP, trained on semantic label maps (data.semseg)."""

    clip: str | None = None  # the CLIP it is built on (default: the packaged one)
    dataset: str = "synthetic"  # layout of data.semseg: synthetic or cocostuff171
    exclude_classes: list[str] = field(default_factory=list)  # never targets: their pixels are ignored
    side: SideConfig = field(default_factory=lambda: SideConfig(256, 16, 96, 6, 4, 4.0, 16))
    fusion: tuple = ((0, 0), (1, 1), (2, 2), (3, 3))  # (side index, CLIP layer) pairs
    recognition_start: int = 3
    deep_supervision: tuple = (5, 6)
    clip_resolution: float = 0.5
    decoder_width: int = 128
    decoder_layers: int = 3
    templates: str = "synthetic"  # vild (SAN's 14) or synthetic (the packaged CLIP's 3)
    train_clip_pos_embed: bool = True  # SAN trains CLIP's visual positional embedding, nothing else of CLIP
    clip_pos_antialias: bool = False  # resize that embedding antialiased (open_clip) or not (SAN)
    crop: int = 256
    scale: tuple[float, float] = (0.75, 1.5)  # short side / crop, uniform
    hflip_prob: float = 0.5
    criterion: CriterionConfig = field(default_factory=CriterionConfig)


@dataclass
class PatTrainConfig:
    """Stage pat: a SAN (section `san`) with PAT's feature-pyramid tokenizer (docs/pat.md),
    trained with SAN's losses + `recon_weight` x reconstruction + `codebook_weight` x the
    codebook terms. `layers` / `strides`: the pyramid's CLIP layers and their pooling."""

    layers: tuple = (1, 2, 3)
    strides: tuple = (1, 2, 4)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    width: int = 32
    guidance_width: int = 48
    coupling: str = "loose"  # loose (segmentation trains the semantic branch only) or coupled
    shared_decoder: bool = True  # the semantic branch reads the pixel branch's top-down decoder
    guidance_at: int = 3  # side-network index where the guidance is added (as in san.fusion)
    recon_factor: int = 4  # the reconstruction is the finest level's grid x this
    guidance_scale: float = 1.0  # multiplies the semantic branch's zero-initialised output
    clip_gradient: bool = True  # PAT's losses reach CLIP's positional embedding (False: the pyramid reads CLIP detached)
    guidance_into: str = "side"  # side (the patch tokens at guidance_at) or decoder (the mask decoder's pixel features)
    recon_weight: float = 1.0
    codebook_weight: float = 1.0

    def __post_init__(self):
        if len(self.layers) != len(self.strides) or not self.layers:
            raise UserError(f"pat.layers and pat.strides must be as long (one per level), got {list(self.layers)} "
                            f"and {list(self.strides)}")
        if self.coupling not in ("loose", "coupled"):
            raise UserError(f"pat.coupling must be 'loose' or 'coupled', got '{self.coupling}'")
        if self.guidance_into not in ("side", "decoder"):
            raise UserError(f"pat.guidance_into must be 'side' or 'decoder', got '{self.guidance_into}'")

    def model_config(self) -> PatConfig:
        levels = tuple(PyramidLevel(int(layer), int(stride)) for layer, stride in zip(self.layers, self.strides))
        return PatConfig(levels, self.codebook, self.width, self.guidance_width, self.coupling, self.shared_decoder,
                         self.guidance_at, self.recon_factor, self.guidance_scale,
                         self.clip_gradient, self.guidance_into)


@dataclass
class TrainConfig:
    stage: str = "segment"  # segment (promptable + concepts), caption, sca, or clip
    out_dir: str = "runs/tap"
    steps: int = 1000
    batch_images: int = 8  # per rank
    seed: int = 0
    precision: str = "fp32"  # fp32, bf16, fp16
    distributed: str = "ddp"  # ddp or fsdp (used when launched by torchrun with > 1 process)
    device: str | None = None
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes kept fixed
    interactive_prob: float = 0.5  # 2-stage interactive sampling vs non-interactive
    caption_point_prob: float = 0.5  # caption stage: point prompt from the predicted mask vs box
    # Caption stage with a frozen image encoder: encode every training image once before
    # the first step and train on the cached embeddings (same batches, no encoder cost).
    cache_embeddings: bool = False
    log_every: int = 10
    ckpt_every: int = 100
    export: str | None = None  # final weights as .safetensors (default: OUT_DIR/model.safetensors)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sca: ScaTrainConfig = field(default_factory=ScaTrainConfig)
    clip: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    san: SanTrainConfig = field(default_factory=SanTrainConfig)
    pat: PatTrainConfig = field(default_factory=PatTrainConfig)  # stage pat (with `san`)

    def __post_init__(self):
        if self.stage not in ("segment", "caption", "sca", "clip", "san", "pat"):
            raise UserError(f"stage must be 'segment', 'caption', 'sca', 'clip', 'san' or 'pat', got '{self.stage}'")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"precision must be fp32, bf16 or fp16, got '{self.precision}'")
        if self.optim.schedule not in ("cosine", "poly"):
            raise UserError(f"optim.schedule must be cosine or poly, got '{self.optim.schedule}'")
        if self.distributed not in ("ddp", "fsdp"):
            raise UserError(f"distributed must be ddp or fsdp, got '{self.distributed}'")
        if self.cache_embeddings and self.stage != "caption":
            raise UserError(f"cache_embeddings is an option of stage caption, not of stage {self.stage}")


def _build(cls, data, where: str):
    if data is None:
        return None
    if not isinstance(data, dict):
        raise UserError(f"config section '{where}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"unknown config key(s) in '{where}': {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        target = next((t for t in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(t)), None)
        if target is not None:
            kwargs[name] = _build(target, value, f"{where}.{name}" if where else name)
        elif typing.get_origin(hint) is tuple or hint is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(hint)):
            kwargs[name] = None if value is None else tuple(value)
        else:
            kwargs[name] = _coerce(value, hint, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise UserError(f"bad config section '{where}': {err}") from None


def _coerce(value, hint, where: str):
    """YAML reads '3e-4' as a string; numbers are converted to the field's type."""
    kinds = typing.get_args(hint) or (hint,)
    for kind in (float, int):
        if kind in kinds and not isinstance(value, bool) and isinstance(value, (str, int, float)) and value is not None:
            try:
                return kind(value) if kind is float or float(value).is_integer() else value
            except ValueError:
                raise UserError(f"config key '{where}' must be a number, got {value!r}") from None
    return value


def parse_override(text: str) -> tuple[list[str], object]:
    """'optim.lr=3e-4' -> (['optim', 'lr'], 0.0003), values parsed as YAML."""
    yaml = _yaml()

    if "=" not in text:
        raise UserError(f"override must look like key.sub=value, got '{text}'")
    key, value = text.split("=", 1)
    return key.split("."), yaml.safe_load(value)


def _yaml():
    try:
        import yaml
    except ImportError:
        raise UserError("training configs need PyYAML: pip install 'tapkit-vision[train]'") from None
    return yaml


def _merge(base: dict, update: dict) -> dict:
    """`update` over `base`, mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file as a dict; a top-level `base: other.yaml` (relative to this file) is
    read first and this file's keys go over it, so a continuation stage states only what
    changes."""
    yaml = _yaml()
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise UserError(f"config {path} is its own base")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"malformed YAML in {path}: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(_read_yaml(path.parent / base, seen + (path.resolve(),)), data)


def load_config(path: str | os.PathLike, overrides: list[str] = ()) -> TrainConfig:
    data = _read_yaml(Path(path))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return config_from_dict(data)


def config_from_dict(data: dict) -> TrainConfig:
    return _build(TrainConfig, data, "")


def config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)
