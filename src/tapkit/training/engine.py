"""The training loop, readable top to bottom: build the model and data of a stage,
resume if a checkpoint exists, then step with AdamW + warmup/cosine, autocast,
gradient clipping, DDP/FSDP, atomic checkpoints, TensorBoard scalars and a
progress bar with ETA. Batches are a function of (seed, step, rank), so a resumed
run continues exactly where it stopped."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tapkit.checkpoint.io import save_safetensors
from tapkit.models.interface import PromptableModel
from tapkit.runtime import Runtime, runtime
from tapkit.training import distributed
from tapkit.training.checkpoint import (CHECKPOINT_NAME, TrainState, check_resume, load_train_state, rng_state,
                                       save_train_state, set_rng_state)
from tapkit.training.config import TrainConfig, config_to_dict
from tapkit.training.stages import Stage, clip, pat, san, sca, tap_caption, tap_segment

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    first_loss: float | None
    export: Path | None
    skipped_images: int
    model: nn.Module | None = field(default=None, repr=False)  # this rank's trained model


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to optim.lr, then cosine decay to lr * min_lr_ratio at the last step,
    or (schedule poly) detectron2's WarmupPolyLR: lr * (1 - step / steps) ** 0.9."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "poly":
        return o.lr * (1 - min(step, cfg.steps) / cfg.steps) ** 0.9
    progress = (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps)
    floor = o.lr * o.min_lr_ratio
    return floor + (o.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices and kernels only (not biases, norms, embeddings tables of size 1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))


# The stages, by the name a config's `stage` gives (one module each under stages/).
STAGES: dict[str, Stage] = {"segment": tap_segment.STAGE, "caption": tap_caption.STAGE, "sca": sca.STAGE,
                            "clip": clip.STAGE, "san": san.STAGE, "pat": pat.STAGE}


def stage_for(cfg: TrainConfig) -> Stage:
    return STAGES[cfg.stage]


def _identity(batch):
    return batch


def _state_dicts(module: nn.Module, objective: nn.Module, optimizer, cfg: TrainConfig, info) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state, on CPU; the model in official naming."""
    if info.distributed and cfg.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model_sd, optim_sd = get_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k.removeprefix("model."): v for k, v in model_sd.items()}, optim_sd
    return objective.model.state_dict(), optimizer.state_dict()


def _load_states(module, objective: nn.Module, optimizer, state: TrainState, cfg: TrainConfig, info) -> None:
    if info.distributed and cfg.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        model_sd = {f"model.{k}": v for k, v in state.model.items()}
        set_state_dict(module, optimizer, model_state_dict=model_sd, optim_state_dict=state.optimizer,
                       options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state.optimizer)


def train(cfg: TrainConfig, progress: bool = True, stop_after: int | None = None,
          allow_config_change: bool = False) -> TrainResult:
    """Runs (or resumes) a stage. `stop_after` ends this run after that many steps,
    as an interruption would (used to check that resuming is exact). A resumed run must
    have the checkpoint's config (`allow_config_change` accepts other values, never
    another architecture). A run that fails before its first checkpoint removes the
    folders it created, so a failed command leaves no empty run folder behind."""
    first_missing = _first_missing(Path(cfg.out_dir))
    with runtime(cfg.device) as info:
        try:
            return _train(cfg, info, progress, stop_after, allow_config_change)
        except BaseException:
            if info.is_main and first_missing is not None and not (Path(cfg.out_dir) / CHECKPOINT_NAME).is_file():
                shutil.rmtree(first_missing, ignore_errors=True)
            raise


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: it exists)."""
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def _train(cfg: TrainConfig, info: Runtime, progress: bool, stop_after: int | None, allow_config_change: bool) -> TrainResult:
    from tqdm import tqdm

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    stage = stage_for(cfg)
    model = stage.build_model(cfg)
    state = load_train_state(out_dir)
    if state is not None:
        check_resume(state, config_to_dict(cfg), model.cfg.to_dict(), allow_config_change, out_dir)
        model.load_state_dict(state.model)
        if info.is_main:
            print(f"resuming {out_dir} at step {state.step} of {cfg.steps} ({out_dir / CHECKPOINT_NAME})", file=sys.stderr)
    stage.freeze(model, cfg)
    model.to(info.device)
    if isinstance(model, PromptableModel) and model.concepts is not None:  # a plain tensor, not a buffer
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
