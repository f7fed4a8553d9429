"""A DataLoader sampler over the pruner's current subset, in PyTorch's Sampler conventions."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Sampler

from ._validation import check_bool, check_int
from .distributed import world
from .errors import InvalidValue
from .selection import Stream, make_generator

if TYPE_CHECKING:
    from .pruner import Pruner


def shard(indices: torch.Tensor, rank: int, world_size: int, drop_last: bool) -> torch.Tensor:
    """This rank's equal share of ``indices``, as ``DistributedSampler`` cuts it.

    Without ``drop_last`` the list is padded by repeating it from the start so that every rank
    gets ``ceil(n / world_size)`` samples; with it, the tail is cut to ``floor(n / world_size)``.
    Equal counts keep every rank at the same number of steps, so no collective hangs.
    """
    n = indices.numel()
    if drop_last:
        total = (n // world_size) * world_size
        indices = indices[:total]
    else:
        total = math.ceil(n / world_size) * world_size
        if total > n:
            repeats = math.ceil(total / n)
            indices = indices.repeat(repeats)[:total]
    return indices[rank:total:world_size]


class PrunedSampler(Sampler[int]):
    """Yields this rank's share of the pruner's subset for the current epoch.

    Make it once and hand it to one DataLoader: each ``iter()`` reads the subset chosen by the
    latest ``pruner.set_epoch``. ``sampler.set_epoch(e)`` forwards to the pruner, so loops and
    frameworks that call it on their sampler (Lightning, Accelerate) drive the selection too.
    The shuffle order comes from ``(seed, epoch)`` and is identical on every rank.
    """

    def __init__(
        self,
        pruner: Pruner,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        self.pruner = pruner
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_last = check_bool("drop_last", drop_last)
        default_rank, default_world = world()
        self.num_replicas = check_int(
            "num_replicas", default_world if num_replicas is None else num_replicas, low=1
        )
        self.rank = check_int("rank", default_rank if rank is None else rank, low=0)
        if self.rank >= self.num_replicas:
            raise InvalidValue(f"rank={self.rank} must be in [0, num_replicas={self.num_replicas})")

    def set_epoch(self, epoch: int) -> None:
        self.pruner.set_epoch(epoch)

    def local_indices(self) -> torch.Tensor:
        """This rank's indices for the current epoch, in iteration order (CPU int64)."""
        epoch = self.pruner.epoch
        if epoch is None:
            raise RuntimeError(
                "the sampler has no subset yet: call pruner.set_epoch(epoch) (or "
                "sampler.set_epoch(epoch)) at the start of each epoch, before iterating"
            )
        subset = self.pruner.indices().cpu()
        if self.shuffle:
            gen = make_generator(self.pruner.seed, Stream.SHUFFLE, epoch)
            subset = subset[torch.randperm(subset.numel(), generator=gen)]
        return shard(subset, self.rank, self.num_replicas, self.drop_last)

    def __iter__(self) -> Iterator[int]:
        return iter(self.local_indices().tolist())

    def __len__(self) -> int:
        n = self.pruner.epoch_size(self.pruner.epoch or 0)
        if self.drop_last:
            return n // self.num_replicas
        return math.ceil(n / self.num_replicas)
