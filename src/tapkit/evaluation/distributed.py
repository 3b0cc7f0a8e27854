"""Running under torchrun: which rank this is, its device and its slice of the images.

Without torchrun (or with one process) everything is a no-op and rank 0 does all
the work. With several processes, each rank runs `images[rank::world_size]`,
saves its predictions to its own shard file, and rank 0 reads all shards after
a barrier (so the output folder must be on a filesystem every rank can reach:
one machine, or a shared filesystem)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

from tapkit.errors import UserError
from tapkit.loading import resolve_device

T = TypeVar("T")

# Ranks wait for the slowest one before rank 0 scores; a long evaluation can
# leave one rank waiting for hours (e.g. after resuming an uneven partial run).
BARRIER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's slice: every world_size-th item starting at its rank."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str | None = None) -> DistContext:
    """Reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and joins the
    process group: nccl when the device is a GPU, gloo otherwise. Each rank takes
    GPU `LOCAL_RANK` unless a device index is given."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if dev.index is None:
            if local_rank >= torch.cuda.device_count():
                raise UserError(f"rank {rank} wants GPU {local_rank} but only {torch.cuda.device_count()} are visible")
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT)
    return DistContext(rank, world_size, dev)
