"""Per-sample loss statistics, kept in one stacked tensor on the training device.

Each sample has a row ``(mean, var, seen)``: the exponential moving average (EMA) of its loss,
the EMA variance, and how many updates it received. One gather and one scatter per update keep
``update`` cheap on a GPU, where small kernels are launch-bound, and nothing in it synchronises
the host with the device. On the CPU, where reading a value costs no sync, a batch of distinct
indices and finite losses (the common case) takes a fast path in NumPy, whose small-array
operations cost a fraction of torch's dispatch; it computes the same float64 arithmetic, so the
table is bit for bit what the general path gives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .errors import InvalidValue

MEAN, VAR, SEEN = 0, 1, 2
MAX_SAMPLES = 2**31 - 1  # indices share an int64 sort key with 32 bits of loss

_LOW32 = 0xFFFFFFFF
_FLOAT32_MAX = torch.finfo(torch.float32).max
#: Batches this large sort their indices faster in torch than in NumPy on the fast path.
_FAST_PATH_MAX = 1 << 16


def merge_duplicates(indices: Tensor, losses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Canonicalise a non-empty batch that may hold the same sample more than once.

    Returns ``(indices, mean_loss, finite_count)`` with one entry per input element, sorted by
    index. Every copy of a repeated index carries the mean of that index's finite losses, so a
    scatter writes identical values whatever the input order and the result is deterministic on
    CPU and CUDA alike. ``finite_count`` is the number of finite losses behind each mean (0 means
    the sample must not be updated).

    Indices must lie in ``[0, 2**31)``. The batch is sorted by one int64 key,
    ``index << 32 | bits(loss)``, so repeated indices come out in an order fixed by the loss
    values themselves; each index's sum is then a float64 segmented sum over its own copies
    alone, in that fixed order (no other sample's loss can round it away, and a lone loss comes
    back exactly, -0.0 as 0.0). None of it is a host sync.
    """
    indices = indices.long()
    bits = losses.view(torch.int32).to(torch.int64) & _LOW32
    keys, order = torch.sort((indices << 32) | bits)
    sorted_idx = keys >> 32
    sorted_loss = losses.index_select(0, order)
    finite = sorted_loss.abs() < math.inf  # isfinite() takes four kernels, this two
    # Columns (finite loss or 0, 1 if finite), summed per index.
    terms = torch.stack([sorted_loss.nan_to_num(0.0, 0.0, 0.0), finite.to(losses.dtype)], 1)
    start = torch.searchsorted(sorted_idx, sorted_idx, right=False)
    end = torch.searchsorted(sorted_idx, sorted_idx, right=True)
    # Segment i is [start[i], start[i + 1]): empty inside a run of copies, the whole run at its
    # last copy; every copy then reads the sums at its run's last element.
    offsets = torch.cat([start, end[-1:]])  # end[-1] is the batch size
    sums = torch.segment_reduce(terms.double(), "sum", offsets=offsets, axis=0, unsafe=True)
    total, count = sums.index_select(0, end - 1).unbind(1)
    return sorted_idx, (total / count.clamp_min(1)).float(), count


def fold_batch(
    rows: Tensor, indices: Tensor, losses: Tensor, alpha: float, offset: int, sharded: bool
) -> None:
    """Fold one non-empty batch into ``rows`` (``SampleStats``'s table plus its spare row).

    A module-level function so that ``torch.compile`` can fuse it (``SampleStats(compile=True)``).
    """
    num_rows = rows.shape[0] - 1
    idx, loss, count = merge_duplicates(indices, losses)
    keep = count > 0
    if sharded:
        idx = idx - offset
        keep &= (idx >= 0) & (idx < num_rows)
    idx = torch.where(keep, idx, num_rows)
    mean, var, seen = rows.index_select(0, idx).double().unbind(1)
    # A first loss (seen == 0) sets mean = loss, var = 0.
    again = seen > 0
    # In float64, where no finite float32 overflows (d**2 < 1e78): the mean, a convex
    # combination, stays finite; the variance saturates at float32's largest value.
    diff = loss.double() - mean
    # alpha enters as arithmetic, not as an operator's ``alpha=`` argument: compiled code
    # cached for one alpha would otherwise be reused for another (pytorch/pytorch#194976).
    new_mean = torch.where(again, mean + alpha * diff, loss.double())
    new_var = torch.where(again, (var + alpha * diff * diff) * (1 - alpha), 0)
    new_var = new_var.clamp_max(_FLOAT32_MAX)
    rows.index_copy_(0, idx, torch.stack([new_mean, new_var, seen + 1], 1).float())


def fold_distinct_cpu(
    rows: np.ndarray, indices: np.ndarray, losses: np.ndarray, alpha: float
) -> bool:
    """``fold_batch`` for a CPU batch of distinct indices and finite float32 losses, in NumPy.

    Returns False, changing nothing, when the batch is not such a batch (the general path then
    takes it). The same float64 operations in the same order as ``fold_batch``, so the result is
    identical to the bit.
    """
    if not np.isfinite(losses).all():
        return False
    ordered = np.sort(indices)
    if (ordered[1:] == ordered[:-1]).any():
        return False
    mean, var, seen = rows[indices].astype(np.float64).T
    loss = losses.astype(np.float64)
    again = seen > 0
    diff = loss - mean
    new_mean = np.where(again, mean + alpha * diff, loss)
    new_var = np.where(again, (var + alpha * diff * diff) * (1 - alpha), 0.0)
    rows[indices] = np.stack([new_mean, np.minimum(new_var, _FLOAT32_MAX), seen + 1], 1)
    return True


@functools.cache
def compiled_fold_batch() -> Callable[..., None]:
    """``fold_batch`` under ``torch.compile`` with dynamic shapes: one compile serves most batch
    sizes (special sizes, another alpha, device or sharding compile again)."""
    return torch.compile(fold_batch, dynamic=True)


class SampleStats:
    """EMA mean and variance of each sample's loss.

    With step size ``alpha`` and a new loss ``x``:
    ``d = x - mean``; ``mean += alpha * d``; ``var = (1 - alpha) * (var + alpha * d**2)``.
    A sample's first loss sets ``mean = x`` and ``var = 0``. Non-finite losses never reach the
    table, and every entry stays finite: the update runs in float64 and the float32 table keeps
    the result, with a variance past float32's range (a loss jump beyond about 1.8e19)
    saturated at its largest value, 3.4e38. Such a sample then has the largest UCB bonus, so
    it is kept, like an unseen one, until its losses settle. Memory: 12 bytes per sample.

    A shard (``total`` given) holds only the rows of samples ``[offset, offset + num_samples)``
    of ``total``: ``update`` still takes global indices and the whole (gathered) batch, merges
    it exactly as an unsharded table would, and routes entries of other shards to one spare row
    past the end, which nothing reads, so no host sync is needed to drop them. Entries with no
    finite loss go to the same spare row.
    """

    def __init__(
        self,
        num_samples: int,
        alpha: float,
        device: torch.device | str = "cpu",
        *,
        offset: int = 0,
        total: int | None = None,
        compile: bool = False,
    ):
        if (total if total is not None else offset + num_samples) > MAX_SAMPLES:
            raise InvalidValue(
                f"SampleStats holds samples of indices below {MAX_SAMPLES + 1} (2**31); got "
                f"num_samples={num_samples}, offset={offset}, total={total}"
            )
        self.alpha = alpha
        self.compile = compile
        self.num_rows = num_samples
        self.offset = offset
        self.total = total  # None: the table holds every sample
        self._rows = torch.zeros(num_samples + 1, 3, device=device)  # + the spare row

    @property
    def table(self) -> Tensor:
        """``(num_samples, 3)`` rows ``(mean, var, seen)``, one per sample held here."""
        return self._rows[: self.num_rows]

    @table.setter
    def table(self, value: Tensor) -> None:
        if value.shape != (self.num_rows, 3):
            raise InvalidValue(f"table must be ({self.num_rows}, 3), got {tuple(value.shape)}")
        self._rows = torch.cat([value, value.new_zeros(1, 3)])

    @property
    def mean(self) -> Tensor:
        return self.table[:, MEAN]

    @property
    def var(self) -> Tensor:
        return self.table[:, VAR]

    @property
    def seen(self) -> Tensor:
        """Bool mask of samples that received at least one finite loss."""
        return self.table[:, SEEN] > 0

    @property
    def device(self) -> torch.device:
        return self._rows.device

    def to(self, device: torch.device | str) -> None:
        self._rows = self._rows.to(device)

    def update(self, indices: Tensor, losses: Tensor) -> bool:
        """Fold one batch of int64 indices and their losses in (no host sync off the CPU).

        Returns True when the batch took the CPU's fast path, which it does only when it is
        not empty, its indices are distinct and every loss is finite (the caller then knows
        that every loss counted).
        """
        if indices.numel() == 0:  # before the compiled code, which would not survive it
            return False
        losses = losses.detach().float()
        fast = (
            self._rows.device.type == "cpu"
            and self.total is None
            and not self.compile
            and indices.numel() <= _FAST_PATH_MAX
        )
        if fast and fold_distinct_cpu(
            self._rows.numpy(), indices.numpy(), losses.numpy(), self.alpha
        ):
            return True
        fold = compiled_fold_batch() if self.compile else fold_batch
        fold(self._rows, indices, losses, self.alpha, self.offset, self.total is not None)
        return False
