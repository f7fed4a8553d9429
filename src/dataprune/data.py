"""Datasets and collate functions that carry each sample's index to the loss.

The loop then knows which samples a batch holds and can pass their indices to the pruner.
Nothing in PyTorch is patched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from .errors import InvalidType, InvalidValue


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
        having = sum(self.key in item for item in items)
        if having == 0:  # an evaluation set: no indices to keep
            return self.collate_fn(items)
        if having < len(items):
            raise InvalidValue(
                f"{len(items) - having} of the {len(items)} items of a batch have no "
                f"{self.key!r} key and the others do: items of one dataset (an "
                "IndexedDictDataset) all carry their index"
            )
        indices = torch.tensor([item[self.key] for item in items], dtype=torch.int64)
        rest = [{k: v for k, v in item.items() if k != self.key} for item in items]
        batch = self.collate_fn(rest)
        batch[self.key] = indices
        return batch
