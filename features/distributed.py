"""torch.distributed under `torchrun`, reduced to what the feature pass needs.

    ctx = DistContext.from_env("cuda")   # reads RANK / WORLD_SIZE / LOCAL_RANK set by torchrun
    ctx.rank, ctx.world_size, ctx.device
    result = ctx.on_rank0(create_store)  # rank 0 runs it; its UserError reaches every rank
    ctx.barrier(); ctx.close()

A single process (no WORLD_SIZE, or 1) never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from engine.errors import UserError


@dataclass
class DistContext:
    """This process's place in the job and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @classmethod
    def from_env(cls, device: str = "auto") -> DistContext:
        """Join the job torchrun describes in the environment (or run alone).

        Args:
            device: "auto", "cpu" or "cuda"; under torchrun CUDA means cuda:LOCAL_RANK.
        """
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but no CUDA GPU is visible; use --device cpu")
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(dev)  # DALI and NCCL use the current device
        if world_size <= 1:
            return cls(device=dev)

        owns = not dist.is_initialized()
        if owns:  # nccl between GPUs; gloo lets the same code run (and be tested) on CPUs
            if use_cuda:  # device_id binds NCCL (and its barriers) to this rank's GPU
                dist.init_process_group(backend="nccl", device_id=dev)
            else:
                dist.init_process_group(backend="gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def on_rank0(self, fn):
        """Run `fn()` on rank 0 only and share its result (or its UserError) with every rank.

        Without this, a UserError on rank 0 would leave the other ranks waiting forever.
        """
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except UserError as err:
                error = str(err)
        if self.world_size > 1:
            box = [result, error]
            dist.broadcast_object_list(box, src=0)
            result, error = box
        if error is not None:
            raise UserError(error)
        return result

    def gather(self, obj) -> list:
        """`obj` of every rank, in rank order (on every rank)."""
        if self.world_size == 1:
            return [obj]

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()
            self.owns_group = False
