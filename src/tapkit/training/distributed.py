"""Training across ranks: wrapping the objective in DDP or FSDP, and the collectives the
loop needs. Ranks and devices come from `tapkit.runtime`."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from tapkit.runtime import Runtime


def wrap(module: nn.Module, info: Runtime, kind: str) -> nn.Module:
    if not info.distributed:
        return module
    if kind == "fsdp":
        # FSDP2: every transformer block is its own shard group, the rest belongs to the root.
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for name, child in module.named_modules():
            if name.endswith(("image_encoder.blocks", "text_decoder.transformer.blocks")):
                for block in child:
                    fully_shard(block, mesh=mesh)
        return fully_shard(module, mesh=mesh)
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(module, device_ids=ids, find_unused_parameters=True)


def all_gather_objects(obj, info: Runtime) -> list:
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(value: float, info: Runtime) -> float:
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t) / info.world_size
