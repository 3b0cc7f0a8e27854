"""The training loop, readable top to bottom: build the model and data of a stage,
resume if a checkpoint exists, then step with AdamW + warmup/cosine, autocast,
gradient clipping, DDP/FSDP, atomic checkpoints, TensorBoard scalars and a
progress bar with ETA. Batches are a function of (seed, step, rank), so a resumed
run continues exactly where it stopped."""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tapkit.checkpoint.io import save_safetensors
from tapkit.errors import UserError
from tapkit.loading import load_model
from tapkit.models.tap.concepts import ConceptVocabulary
from tapkit.models.tap.model import TapModel, is_derived_key
from tapkit.models.tap.tokenizer import TextTokenizer
from tapkit.runtime import Runtime, runtime
from tapkit.training import distributed
from tapkit.training.checkpoint import TrainState, load_train_state, rng_state, save_train_state, set_rng_state
from tapkit.training.config import TrainConfig, config_to_dict
from tapkit.training.data import CaptionBatches, SegmentBatches
from tapkit.training.objectives import TapObjective
from tapkit.training.stages import Stage

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    first_loss: float | None
    export: Path | None
    skipped_images: int
    model: TapModel | None = field(default=None, repr=False)  # this rank's trained model


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to optim.lr, then cosine decay to lr * min_lr_ratio at the last step."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    progress = (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps)
    floor = o.lr * o.min_lr_ratio
    return floor + (o.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices and kernels only (not biases, norms, embeddings tables of size 1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))


def make_batches(cfg: TrainConfig, model: TapModel, info: Runtime):
    d = cfg.data
    size = model.image_size
    if cfg.stage == "segment":
        from tapkit.data.sa1b import read_sa1b
        from tapkit.data.semantic import SemanticTargets

        if not d.sa1b:
            raise UserError("stage segment needs data.sa1b (an SA-1B directory)")
        semantic = SemanticTargets.load(d.semantic) if d.semantic else None
        if semantic is not None and model.concepts is None:
            raise UserError("data.semantic is set but model.concepts is not: the concept loss needs the concept file")
        n_concepts = len(model.concepts) if model.concepts is not None else 0
        return SegmentBatches(read_sa1b(d.sa1b), size, cfg.batch_images, cfg.seed, info.rank, info.world_size,
                              d.prompts_per_image, semantic, n_concepts)
    from tapkit.data.vg import read_vg

    if not d.vg:
        raise UserError("stage caption needs data.vg (a Visual Genome COCO-style JSON) and data.image_root")
    if model.tokenizer is None or model.text_decoder is None:
        raise UserError("stage caption needs model.tokenizer and a model with a text decoder")
    records = read_vg(d.vg, d.image_root or Path(d.vg).parent)
    return CaptionBatches(records, size, cfg.batch_images, cfg.seed, info.rank, info.world_size, d.prompts_per_image,
                          model.tokenizer, model.text_decoder.cfg.max_seq_len - 1)


TAP_STAGE = Stage(
    build_model=build_model,
    freeze=freeze,
    objective=lambda model, cfg: TapObjective(model, cfg.loss, cfg.interactive_prob, cfg.caption_point_prob),
    batches=make_batches,
    export=lambda model, full_state: {k: v for k, v in full_state.items() if not is_derived_key(k)},
)


def stage_for(cfg: TrainConfig) -> Stage:
    if cfg.stage == "sca":
        from tapkit.training.sca import SCA_STAGE

        return SCA_STAGE
    return TAP_STAGE


def _identity(batch):
    return batch


def _state_dicts(module: nn.Module, objective: TapObjective, optimizer, cfg: TrainConfig, info) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state, on CPU; the model in official naming."""
    if info.distributed and cfg.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model_sd, optim_sd = get_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k.removeprefix("model."): v for k, v in model_sd.items()}, optim_sd
    return objective.model.state_dict(), optimizer.state_dict()


def _load_states(module, objective: TapObjective, optimizer, state: TrainState, cfg: TrainConfig, info) -> None:
    if info.distributed and cfg.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        model_sd = {f"model.{k}": v for k, v in state.model.items()}
        set_state_dict(module, optimizer, model_state_dict=model_sd, optim_state_dict=state.optimizer,
                       options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state.optimizer)


def train(cfg: TrainConfig, progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Runs (or resumes) a stage. `stop_after` ends this run after that many steps,
    as an interruption would (used to check that resuming is exact)."""
    with runtime(cfg.device) as info:
        return _train(cfg, info, progress, stop_after)


def _train(cfg: TrainConfig, info: Runtime, progress: bool, stop_after: int | None) -> TrainResult:
    from tqdm import tqdm

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    stage = stage_for(cfg)
    model = stage.build_model(cfg)
    state = load_train_state(out_dir)
    if state is not None:
        model.load_state_dict(state.model)
    stage.freeze(model, cfg)
    model.to(info.device)
    if model.concepts is not None:
        model.concepts.weights = model.concepts.weights.to(info.device)
    objective = stage.objective(model, cfg)
    module = distributed.wrap(objective, info, cfg.distributed)
    optimizer = make_optimizer(module, cfg)
    start = 0
    if state is not None:
        _load_states(module, objective, optimizer, state, cfg, info)
        start = state.step
        set_rng_state(state.rng[info.rank] if info.rank < len(state.rng) else state.rng[0])
    batches = stage.batches(cfg, model, info)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, end),
                                         num_workers=cfg.data.num_workers, collate_fn=_identity,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.precision == "fp16" and info.device.type == "cuda")
    autocast = (torch.autocast(info.device.type, dtype=AUTOCAST[cfg.precision]) if cfg.precision in AUTOCAST
                else contextlib.nullcontext())
    writer = _tensorboard(out_dir) if info.is_main else None
    metrics_path = out_dir / "metrics.jsonl"
    if info.is_main:
        _truncate_metrics(metrics_path, start)
    bar = tqdm(total=cfg.steps, initial=start, desc=f"train[{cfg.stage}]", disable=not (progress and info.is_main),
               unit="step", dynamic_ncols=True)
    first_loss, loss_value, t0 = None, float("nan"), time.time()
    step = start - 1
    for step, batch in zip(range(start, end), loader):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            out = module(batch)
        scaler.scale(out.total).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        loss_value = distributed.mean_across_ranks(float(out.total.detach()), info)
        first_loss = loss_value if first_loss is None else first_loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
        done = step + 1
        if info.is_main and (done % cfg.log_every == 0 or done == cfg.steps):
            record = {"step": done, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm),
                      "seconds": round(time.time() - t0, 2), **out.parts}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if writer is not None:
                for key, value in record.items():
                    if key != "step":
                        writer.add_scalar(f"{cfg.stage}/{key}", value, done)
        if done % cfg.ckpt_every == 0 or done in (cfg.steps, end):
            _checkpoint(module, objective, optimizer, cfg, info, done)
    bar.close()
    if writer is not None:
        writer.close()
    export = None
    if step + 1 >= cfg.steps:
        full_state, _ = _state_dicts(module, objective, optimizer, cfg, info)  # a collective under FSDP
        if info.is_main:
            export = Path(cfg.export) if cfg.export else out_dir / "model.safetensors"
            save_safetensors(stage.export(model, full_state), export, config=model.cfg.to_dict())
    return TrainResult(step + 1, loss_value, first_loss, export, batches.skips.total, model)


def _checkpoint(module, objective, optimizer, cfg, info, step: int) -> None:
    model_sd, optim_sd = _state_dicts(module, objective, optimizer, cfg, info)
    rngs = distributed.all_gather_objects(rng_state(), info)
    if info.is_main:
        model_sd = {k: v.detach().cpu() for k, v in model_sd.items()}
        save_train_state(TrainState(step, model_sd, optim_sd, rngs, config_to_dict(cfg), objective.model.cfg.to_dict()),
                         cfg.out_dir)
    info.barrier()


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drops logged steps after the checkpoint (they are about to be redone)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))
