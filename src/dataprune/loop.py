"""What the Pruner needs from a training loop's batches: checks, slices and the end-of-epoch pass.

A batch is whatever the loader yields beside its indices: a tensor, or tuples, lists and dicts
of them whose first dimension is the batch. :func:`take_rows` and :func:`to_device` walk such a
structure; anything that is not a tensor passes through unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .data import IndexedDictDataset
from .errors import InvalidIndex, InvalidType, InvalidValue
from .state import describe

#: What a loop's per-sample loss function returns: the losses, or the losses and a bool mask of
#: the samples that have one (see :func:`dataprune.sequence_losses`).
SampleLosses = Callable[[Any], "Tensor | tuple[Tensor, Tensor]"]


def split_losses(result: Any) -> tuple[Tensor, Tensor | None]:
    """``(losses, valid)`` from what a per-sample loss function returned."""
    if isinstance(result, tuple) and len(result) == 2:
        return result[0], result[1]
    return result, None


def check_batch(indices: Any, losses: Any, valid: Any) -> None:
    """Refuse indices, losses and a valid mask that are not one entry per sample."""
    if not isinstance(losses, Tensor) or not losses.is_floating_point():
        raise InvalidType(f"losses must be a floating-point tensor, got {describe(losses)}")
    if losses.is_meta or (isinstance(indices, Tensor) and indices.is_meta):
        raise InvalidType("record() needs real tensors, not tensors on the 'meta' device")
    if not isinstance(indices, Tensor) or indices.dtype not in (torch.int64, torch.int32):
        raise InvalidType(
            f"indices must be an int64 (or int32) tensor of dataset indices, got "
            f"{describe(indices)}"
        )
    if indices.dim() != 1:
        raise InvalidValue(
            f"indices must be 1-D, one dataset index per sample; got shape {tuple(indices.shape)}"
        )
    if losses.dim() == 0:
        raise InvalidValue(
            "losses is a scalar, but record() needs one loss per sample: compute the loss "
            "with reduction='none', e.g. F.cross_entropy(logits, y, reduction='none')"
        )
    if losses.shape != indices.shape:
        raise InvalidValue(
            f"losses must have one entry per index, shape {tuple(indices.shape)}; got "
            f"{tuple(losses.shape)} (compute the loss with reduction='none')"
        )
    if valid is not None:
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
            raise InvalidType(f"valid must be a bool tensor (or None), got {describe(valid)}")
        if valid.shape != losses.shape:
            raise InvalidValue(
                f"valid must have the shape of losses, {tuple(losses.shape)}; got "
                f"{tuple(valid.shape)}"
            )


def check_range(indices: Tensor, num_samples: int) -> None:
    """Refuse indices outside ``[0, num_samples)`` (reads two values on the host)."""
    low, high = (int(v) for v in torch.aminmax(indices)) if indices.numel() else (0, 0)
    if low < 0 or high >= num_samples:
        raise InvalidIndex(
            f"indices must lie in [0, num_samples={num_samples}); got values in [{low}, {high}]"
        )


def masked_mean(losses: Tensor, counted: Tensor | None) -> Tensor:
    """The mean of the counted losses (all, if ``counted`` is None), 0 if none counts.

    Losses left out are replaced by 0, not dropped by a mask index, which would read a count on
    the host. This cannot stop a NaN gradient from the graph behind an inf loss (the chain
    rule multiplies that 0 by an infinite derivative).
    """
    if counted is None:
        return losses.mean()
    return torch.where(counted, losses, 0.0).sum() / counted.sum().clamp_min(1)


def take_rows(batch: Any, rows: Tensor, size: int) -> Any:
    """``batch`` cut to ``rows`` (positions along the first dimension of its ``size`` rows)."""
    if isinstance(batch, Tensor):
        if batch.dim() == 0 or batch.shape[0] != size:
            return batch
        return batch[rows.to(batch.device, non_blocking=True)]
    if isinstance(batch, Mapping):
        return {key: take_rows(value, rows, size) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(take_rows(value, rows, size) for value in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(take_rows(value, rows, size) for value in batch)
    return batch


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor on ``device``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(value, device) for value in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in evaluation mode without gradients, each module's own mode restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


def batches_of(
    data: DataLoader | Callable[[Tensor], Any], indices: Tensor, batch_size: int | None
) -> Iterator[tuple[Tensor, Any]]:
    """``(indices, batch)`` pairs of the samples ``indices``, read like ``data`` reads them.

    ``data`` is the training DataLoader, whose dataset yields ``(index, sample)`` pairs (an
    :class:`dataprune.IndexedDataset`) or dicts with the index under its key (an
    :class:`dataprune.IndexedDictDataset`): a loader over ``indices`` with its collate
    function and workers. Or ``data`` is a function from a tensor of indices to their batch.
    """
    if not isinstance(data, DataLoader):
        if not callable(data):
            raise InvalidType(
                f"data must be the training DataLoader or a function from indices to a batch, "
                f"got {type(data).__name__}"
            )
        if batch_size is None:
            raise InvalidValue("end_epoch(data=<a function>) needs batch_size=")
        for chunk in indices.split(batch_size):
            yield chunk, data(chunk)
        return
    dataset = data.dataset
    size = batch_size or data.batch_size or _batch_size_of(data.batch_sampler)
    loader = DataLoader(
        dataset,
        batch_size=size or 1,
        sampler=indices.tolist(),
        collate_fn=data.collate_fn,
        num_workers=data.num_workers,
        pin_memory=data.pin_memory,
    )
    key = dataset.key if isinstance(dataset, IndexedDictDataset) else None
    for batch in loader:
        if key is not None:
            yield batch[key], {k: v for k, v in batch.items() if k != key}
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            yield batch[0], batch[1]
        else:
            raise InvalidValue(
                "the DataLoader's batches must be (index, batch) pairs (wrap the dataset in "
                "dataprune.IndexedDataset) or dicts with an index key (IndexedDictDataset)"
            )


def _batch_size_of(batch_sampler: Any) -> int | None:
    """A loader's batch size from its batch sampler, through wrappers (Accelerate's): a
    :class:`dataprune.sampler.PrunedBatchSampler`'s full batch, or ``batch_size``."""
    while batch_sampler is not None:
        size = getattr(batch_sampler, "full_batch_size", None) or getattr(
            batch_sampler, "batch_size", None
        )
        if size:
            return size
        batch_sampler = getattr(batch_sampler, "batch_sampler", None)
    return None


def nan_where_invalid(losses: Tensor, valid: Tensor | None) -> Tensor:
    """``losses`` with NaN where a sample has no loss (the statistics skip NaN)."""
    return losses if valid is None else torch.where(valid, losses, math.nan)
