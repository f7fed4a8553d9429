"""A DataLoader sampler over the pruner's current subset, in PyTorch's Sampler conventions."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, Sampler, default_collate

from ._validation import check_bool, check_int
from .distributed import world
from .errors import InvalidType, InvalidValue
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


class IndexedDataset(Dataset):
    """Wraps a map-style dataset so that each item is ``(index, sample)``.

    The training loop then knows which samples a batch holds and can pass their indices to
    ``pruner.record``. Nothing in PyTorch is patched.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        return index, self.dataset[index]


class IndexedDictDataset(Dataset):
    """Wraps a map-style dataset whose items are dicts, adding each item's index under ``key``.

    For Hugging Face-style datasets and collators (``batch["index"]`` then reaches the loss).
    """

    def __init__(self, dataset: Dataset, key: str = "index"):
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if not isinstance(item, Mapping):
            raise InvalidType(
                f"IndexedDictDataset needs items that are dicts; item {index} is a "
                f"{type(item).__name__}: use IndexedDataset for other items"
            )
        if self.key in item:
            raise InvalidValue(
                f"item {index} already has a key {self.key!r}: pass another key= to "
                "IndexedDictDataset"
            )
        return {**item, self.key: index}


class IndexedCollator:
    """A collate function that batches the ``key`` indices apart from the rest of each item.

    Wraps any collate function (default: PyTorch's ``default_collate``; or a Hugging Face data
    collator, which would pad, drop or reject an unknown key): the wrapped one sees the items
    without ``key``, and the batch gets ``key`` back as an int64 tensor. Items that have no
    ``key`` (an evaluation set) are collated as they are.
    """

    def __init__(self, collate_fn: Callable[[list], Any] | None = None, key: str = "index"):
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        self.key = key

    def __call__(self, items: list[Mapping[str, Any]]) -> Any:
        if items and self.key not in items[0]:  # an evaluation set: no indices to keep
            return self.collate_fn(items)
        indices = torch.tensor([item[self.key] for item in items], dtype=torch.int64)
        rest = [{k: v for k, v in item.items() if k != self.key} for item in items]
        batch = self.collate_fn(rest)
        batch[self.key] = indices
        return batch
