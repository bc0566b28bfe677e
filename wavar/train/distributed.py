"""The little that data-parallel training needs: set up from ``torchrun``'s environment, agree.

One process per device. With ``WORLD_SIZE`` <= 1 everything here is a no-op, so the same loop
runs on the CPU, one GPU, or N GPUs under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, metrics and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: this rank's GPU if there is one, else the CPU; anything else as given."""
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        device = f"cuda:{local_rank}"
    return torch.device(device)


def setup(device: str = "auto") -> tuple[DistInfo, bool]:
    """Join the process group named by ``torchrun``'s env vars, if ``WORLD_SIZE`` > 1.

    Returns the :class:`DistInfo` and whether this call created the group (and so should
    destroy it, see :func:`cleanup`). A group the caller already made is used as it is.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                init_method="env://")
        created = True
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), dev), created
    return DistInfo(0, 0, 1, dev), created


def cleanup(created: bool) -> None:
    """Leave the process group if :func:`setup` created it."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks, in place; returns it."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def agree(flag: bool, info: DistInfo) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. "out of time": clocks differ, decisions must not)."""
    if not info.enabled:
        return flag
    t = torch.tensor([float(flag)], device=info.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every rank, in rank order (on every rank)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
