"""Where a command runs: the device, and its place in a torchrun job.

One rule for every command (predict, serve, everything, train, eval):
- no device given: CUDA when available, else the CPU;
- a CUDA device without an index: under torchrun each process takes GPU `LOCAL_RANK`
  (GPU 0 for a single process); an explicit index (`cuda:1`) is kept;
- with more than one process (torchrun's WORLD_SIZE > 1) the process group is joined,
  nccl on GPUs, gloo on the CPU, unless the command asks for a backend.

Without torchrun everything is a no-op: rank 0 of 1 does all the work. Each rank takes
`items[rank::world_size]` of a list of work items (`Runtime.shard`)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from tapkit.errors import UserError

T = TypeVar("T")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device a user asked for (None: CUDA when available, else the CPU)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device '{device}': use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device '{device}' is not supported: use cpu, cuda or cuda:N")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but MPS is not available")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    return device


def device_for_rank(device: str | torch.device | None, local_rank: int) -> torch.device:
    """The device of the process with this local rank: a CUDA device without an index
    becomes GPU `local_rank`; anything else is `resolve_device`'s answer."""
    dev = resolve_device(device)
    if dev.type != "cuda" or dev.index is not None:
        return dev
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {local_rank} wants GPU {local_rank} but only {torch.cuda.device_count()} are visible")
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class Runtime:
    """This process's rank of `world_size` (and its rank on this machine), and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's slice of the work: every world_size-th item starting at its rank."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_runtime(device: str | torch.device | None = None, timeout: timedelta | None = None, backend: str | None = None) -> Runtime:
    """Reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), picks this rank's
    device and, with several processes, joins the process group (`timeout`: how long a
    collective, e.g. a barrier, may wait; None: torch's default)."""
    env = os.environ
    rank, world_size, local_rank = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    dev = device_for_rank(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        options = {"timeout": timeout} if timeout is not None else {}
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"), **options)
    return Runtime(rank, world_size, local_rank, dev)


@contextlib.contextmanager
def runtime(device: str | torch.device | None = None, timeout: timedelta | None = None, backend: str | None = None) -> Iterator[Runtime]:
    """`init_runtime` for the duration of a command; leaves the process group on exit."""
    rt = init_runtime(device, timeout, backend)
    try:
        yield rt
    finally:
        rt.close()
