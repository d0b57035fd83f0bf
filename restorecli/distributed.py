"""Multi-process training with PyTorch's own engine: `torchrun` sets the environment, DDP syncs.

Run `torchrun --nproc_per_node N -m restorecli train ...`: every process computes the same global
batch from the step's seed and trains on its own slice of it, DDP averages the gradients, and
rank 0 alone logs, validates and writes checkpoints. Without torchrun's environment variables this
is a single process and nothing here changes the computation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from restorecli.device import choose_device
from restorecli.errors import UsageError


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_request: str) -> "DistributedContext":
        """Join the process group that torchrun describes, or run as a single process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(rank=0, world_size=1, device=choose_device(device_request))

        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = choose_device(device_request)
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if device.type == "mps":
            raise UsageError("multi-process training does not support MPS; use --device cpu or cuda")
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        return cls(rank=rank, world_size=world_size, device=device)

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise UsageError(
                f"train.batch_size {batch_size} does not split over {self.world_size} processes; "
                f"use a multiple of {self.world_size}"
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        """Return the module whose backward pass averages gradients over processes."""
        if self.world_size == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """Return this process's contiguous slice of a global batch (B, ...)."""
        if self.world_size == 1:
            return batch
        size = batch.shape[0] // self.world_size
        return batch[self.rank * size : (self.rank + 1) * size]

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
