"""The few torch.distributed operations the pruner needs; all are no-ops in one process."""

from __future__ import annotations

import math
import weakref

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


def _comm_device() -> torch.device:
    # NCCL needs CUDA tensors; gloo needs CPU ones.
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else (torch.device("cpu"))
    )


def gather_batch(indices: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
    """All ranks' ``(indices, losses)``, concatenated in rank order, on the input's device.

    Indices travel as int64 and losses as float32 whatever the training dtype, so bf16 never
    rounds an index. ``losses`` may be ``(B,)`` or ``(B, C)``: C values per sample travel
    together (a loss and what ``record`` keeps of a prediction). Ranks may hold batches of
    different sizes: shorter ones are padded with NaN, which the statistics ignore.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return indices, losses
    device = _comm_device()
    out_index_device, out_loss_device = indices.device, losses.device
    indices = indices.to(device=device, dtype=torch.int64)
    losses = losses.detach().to(device=device, dtype=torch.float32)
    sizes = all_gather_sizes(indices.numel())
    pad = max(sizes) - indices.numel()
    if pad:
        indices = torch.cat([indices, indices.new_zeros(pad)])
        losses = torch.cat([losses, losses.new_full((pad, *losses.shape[1:]), math.nan)])
    all_idx = [torch.empty_like(indices) for _ in sizes]
    all_loss = [torch.empty_like(losses) for _ in sizes]
    dist.all_gather(all_idx, indices)
    dist.all_gather(all_loss, losses)
    return torch.cat(all_idx).to(out_index_device), torch.cat(all_loss).to(out_loss_device)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum a tensor over ranks (in place on the communication device; returns the result)."""
    if not is_distributed():
        return tensor
    device = _comm_device()
    buffer = tensor.to(device)
    dist.all_reduce(buffer)
    return buffer.to(tensor.device)


def all_gather_sizes(n: int) -> list[int]:
    """Every rank's ``n``, in rank order (``[n]`` outside torch.distributed)."""
    if not is_distributed() or dist.get_world_size() == 1:
        return [int(n)]
    return [values[0] for values in _all_gather_ints([int(n)])]


def all_gather_varlen(tensor: Tensor) -> Tensor:
    """All ranks' 1-D tensors (of any lengths), concatenated in rank order, on the input's device.

    Shorter ones are padded to the longest for the collective and cut back afterwards.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return tensor
    device = _comm_device()
    sizes = all_gather_sizes(tensor.numel())
    longest = max(sizes)
    buffer = tensor.to(device)
    if buffer.numel() < longest:
        buffer = torch.cat([buffer, buffer.new_zeros(longest - buffer.numel())])
    parts = [torch.empty_like(buffer) for _ in sizes]
    dist.all_gather(parts, buffer)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]).to(tensor.device)


def all_gather_indices(local: Tensor, start: int, length: int) -> Tensor:
    """The union of all ranks' sorted int64 indices, sorted, on every rank.

    Rank r's indices must lie in its own range ``[start, start + length)`` and the ranges must
    be in rank order (as sharded statistics are), so concatenating in rank order sorts. Each
    rank sends its indices (8 bytes each, padded to the longest list) or, when that is smaller,
    its range as a bitmask (1 bit per sample): a pruned subset of more than 1/64 of the samples
    travels as N/8 bytes instead of 8k.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return local
    device = local.device
    info = _all_gather_ints([local.numel(), start, length])
    longest_list = max(kept for kept, _, _ in info)
    longest_range = max(size for _, _, size in info)
    if 8 * longest_list <= (longest_range + 7) // 8:
        return all_gather_varlen(local)
    mask = torch.zeros(length, dtype=torch.bool, device=device)
    mask[local - start] = True
    packed = all_gather_varlen(_pack_bits(mask))
    parts, at = [], 0
    for rank, (_, rank_start, size) in enumerate(info):
        nbytes = (size + 7) // 8
        if rank == dist.get_rank():
            parts.append(local)
        else:
            bits = _unpack_bits(packed[at : at + nbytes], size)
            parts.append(bits.nonzero().squeeze(1).add_(rank_start))
        at += nbytes
    return torch.cat(parts)


def _all_gather_ints(values: list[int]) -> list[list[int]]:
    """Every rank's list of ints (all of one length), in rank order.

    They travel over a gloo group in host memory: under NCCL, a CUDA tensor read back with
    ``.item()`` would stall the host until the device's queue drains, once per ``record``.
    """
    mine = torch.tensor(values, dtype=torch.int64)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine, group=host_group())
    return [t.tolist() for t in every]


# (default group, its gloo twin), at most one pair, both held weakly: torch's own registry keeps
# them alive until destroy_process_group(), which must be the end of them. A strong reference
# here kept both gloo groups, with their connections and threads, until interpreter exit, where
# a rank whose peer had already gone died with SIGABRT ("terminate called without an active
# exception") after a finished run.
_host_groups: list[tuple[weakref.ref, weakref.ref]] = []


def host_group() -> dist.ProcessGroup:
    """A gloo group over all ranks for host-side integers, made once per default process group.

    Making it is a collective call: every rank must make it at the same point (``Pruner``
    does, when it is built). Made under gloo too, so that one code path serves every backend.
    """
    world_group = dist.group.WORLD
    group = _host_groups[0][1]() if _host_groups and _host_groups[0][0]() is world_group else None
    if group is None:
        group = dist.new_group(backend="gloo")
        _host_groups[:] = [(weakref.ref(world_group), weakref.ref(group))]
    return group


_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)


def _pack_bits(mask: Tensor) -> Tensor:
    """Bool mask to uint8, 8 samples a byte, least significant bit first."""
    padded = torch.cat([mask, mask.new_zeros((-mask.numel()) % 8)]).view(-1, 8)
    shifts = _BIT_SHIFTS.to(mask.device)
    return (padded.to(torch.uint8) << shifts).sum(1, dtype=torch.uint8)


def _unpack_bits(packed: Tensor, length: int) -> Tensor:
    shifts = _BIT_SHIFTS.to(packed.device)
    return ((packed.unsqueeze(1) >> shifts) & 1).bool().flatten()[:length]
