"""DataLoader samplers over the pruner's current subset, in PyTorch's Sampler conventions."""

from __future__ import annotations

import logging
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

logger = logging.getLogger("dataprune")


def batch_count(
    n: int, full: int | None, batch_size: int, num_replicas: int, drop_last: bool
) -> int:
    """Batches of one replica's share of ``n`` samples: of ``batch_size`` each, or, in an epoch
    that keeps steps (``full``: the samples of a full epoch), as many as ``full`` samples make,
    at most one per sample."""

    def share(m: int) -> int:
        return m // num_replicas if drop_last else math.ceil(m / num_replicas)

    def batches(m: int) -> int:
        return m // batch_size if drop_last else math.ceil(m / batch_size)

    if full is None:
        return batches(share(n))
    return min(batches(share(full)), share(n))


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
        pruner = self.pruner
        if pruner.keeps_steps(pruner.epoch or 0) and not pruner._warned_steps:
            pruner._warned_steps = True  # once
            logger.warning(
                "method=%r keeps a full epoch's step count on smaller batches, which a loader "
                "of fixed batch_size cannot: build it with DataLoader(dataset, "
                "batch_sampler=pruner.batch_sampler(batch_size)), or each pruned epoch takes "
                "fewer steps",
                pruner.method,
            )
        return iter(self.local_indices().tolist())

    def __len__(self) -> int:
        n = self.pruner.epoch_size(self.pruner.epoch or 0)
        if self.drop_last:
            return n // self.num_replicas
        return math.ceil(n / self.num_replicas)


class PrunedBatchSampler(Sampler[list[int]]):
    """Batches of a :class:`PrunedSampler`'s indices (made by ``pruner.batch_sampler``).

    Batches of ``batch_size`` (the last one short unless ``drop_last``), as
    ``torch.utils.data.BatchSampler`` cuts them, except in the pruned epochs of a method that
    keeps steps: those take as many batches as a full epoch would, of sizes that differ by at
    most one, so that every epoch has full training's step count. ``set_epoch`` forwards to the
    pruner, and ``len()`` is the current epoch's.
    """

    def __init__(self, sampler: PrunedSampler, batch_size: int):
        self.sampler = sampler
        self.pruner = sampler.pruner
        #: the loop's batch: a full epoch's batches hold this many samples
        self.full_batch_size = check_int("batch_size", batch_size, low=1)
        self.drop_last = sampler.drop_last
        #: every batch's size, as torch's BatchSampler has it; None where pruned epochs' batches
        #: are smaller (Accelerate then shards the batches as they come)
        self.batch_size = None if self.pruner.policy.keeps_steps() else batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def split(self, order: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``order`` (the sampler's indices of this epoch, on any device) cut into batches."""
        count = len(self)
        if count == 0:
            return ()
        if self.pruner.keeps_steps(self.pruner.epoch or 0):
            return order.tensor_split(count)
        if self.drop_last:
            order = order[: count * self.full_batch_size]
        return order.split(self.full_batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.split(self.sampler.local_indices()):
            yield batch.tolist()

    def __len__(self) -> int:
        pruner, epoch = self.pruner, self.pruner.epoch or 0
        return batch_count(
            pruner.epoch_size(epoch),
            pruner.num_samples if pruner.keeps_steps(epoch) else None,
            self.full_batch_size,
            self.sampler.num_replicas,
            self.drop_last,
        )
