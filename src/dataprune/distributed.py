"""The few torch.distributed operations the pruner needs; all are no-ops in one process."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """``(rank, world_size)``, ``(0, 1)`` outside torch.distributed."""
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _comm_device(tensor: Tensor) -> torch.device:
    # NCCL needs CUDA tensors; gloo needs CPU ones.
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else (torch.device("cpu"))
    )


def gather_batch(indices: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
    """All ranks' ``(indices, losses)``, concatenated in rank order, on the input's device.

    Indices travel as int64 and losses as float32 whatever the training dtype, so bf16 never
    rounds an index. Ranks may hold batches of different sizes: shorter ones are padded with
    NaN losses, which the statistics ignore.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return indices, losses
    device = _comm_device(indices)
    out_index_device, out_loss_device = indices.device, losses.device
    indices = indices.to(device=device, dtype=torch.int64)
    losses = losses.detach().to(device=device, dtype=torch.float32)
    size = torch.tensor([indices.numel()], device=device)
    sizes = [torch.empty_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    pad = longest - indices.numel()
    if pad:
        indices = torch.cat([indices, indices.new_zeros(pad)])
        losses = torch.cat([losses, losses.new_full((pad,), math.nan)])
    all_idx = [torch.empty_like(indices) for _ in sizes]
    all_loss = [torch.empty_like(losses) for _ in sizes]
    dist.all_gather(all_idx, indices)
    dist.all_gather(all_loss, losses)
    return torch.cat(all_idx).to(out_index_device), torch.cat(all_loss).to(out_loss_device)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum a tensor over ranks (in place on the communication device; returns the result)."""
    if not is_distributed():
        return tensor
    device = _comm_device(tensor)
    buffer = tensor.to(device)
    dist.all_reduce(buffer)
    return buffer.to(tensor.device)


def broadcast_object(obj: object, src: int = 0) -> object:
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
