"""Per-sample loss statistics, kept in one stacked tensor on the training device.

Each sample has a row ``(mean, var, seen)``: the exponential moving average (EMA) of its loss,
the EMA variance, and how many updates it received. One gather and one scatter per update keep
``update`` cheap on a GPU, where small kernels are launch-bound, and nothing in it synchronises
the host with the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

MEAN, VAR, SEEN = 0, 1, 2

_LOW32 = 0xFFFFFFFF


def merge_duplicates(indices: Tensor, losses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Canonicalise a batch that may hold the same sample more than once.

    Returns ``(indices, mean_loss, finite_count)`` with one entry per input element, sorted by
    index. Every copy of a repeated index carries the mean of that index's finite losses, so a
    scatter writes identical values whatever the input order and the result is deterministic on
    CPU and CUDA alike. ``finite_count`` is the number of finite losses behind each mean (0 means
    the sample must not be updated).

    The batch is sorted by one int64 key, ``index << 32 | bits(loss)``, so repeated indices come
    out in an order fixed by the loss values themselves; the per-index sums then come from a
    float64 cumulative sum over that fixed order.
    """
    bits = losses.view(torch.int32).to(torch.int64) & _LOW32
    keys, _ = torch.sort((indices << 32) | bits)
    sorted_idx = keys >> 32
    low = keys & _LOW32
    sorted_loss = torch.where(low >= 2**31, low - 2**32, low).to(torch.int32).view(torch.float32)

    finite = torch.isfinite(sorted_loss)
    zero = sorted_loss.new_zeros(1, dtype=torch.float64)
    sums = torch.cat([zero, torch.where(finite, sorted_loss, 0).double().cumsum(0)])
    counts = torch.cat([zero, finite.double().cumsum(0)])
    start = torch.searchsorted(sorted_idx, sorted_idx, right=False)
    end = torch.searchsorted(sorted_idx, sorted_idx, right=True)
    count = counts[end] - counts[start]
    mean = ((sums[end] - sums[start]) / count.clamp_min(1)).float()
    # A lone sample keeps its loss bit for bit (the cumsum difference can round it).
    mean = torch.where((end - start == 1) & finite, sorted_loss, mean)
    return sorted_idx, mean, count


class SampleStats:
    """EMA mean and variance of each sample's loss.

    With step size ``alpha`` and a new loss ``x``:
    ``d = x - mean``; ``mean += alpha * d``; ``var = (1 - alpha) * (var + alpha * d**2)``.
    A sample's first loss sets ``mean = x`` and ``var = 0``. Non-finite losses never reach the
    table. Memory: 12 bytes per sample.

    A shard (``total`` given) holds only the rows of samples ``[offset, offset + num_samples)``
    of ``total``: ``update`` still takes global indices and the whole (gathered) batch, merges
    it exactly as an unsharded table would, and routes entries of other shards to one spare row
    past the end, which nothing reads, so no host sync is needed to drop them.
    """

    def __init__(
        self,
        num_samples: int,
        alpha: float,
        device: torch.device | str = "cpu",
        *,
        offset: int = 0,
        total: int | None = None,
    ):
        self.alpha = alpha
        self.num_rows = num_samples
        self.offset = offset
        self.total = total  # None: the table holds every sample
        spare = 0 if total is None else 1
        self._rows = torch.zeros(num_samples + spare, 3, device=device)

    @property
    def table(self) -> Tensor:
        """``(num_samples, 3)`` rows ``(mean, var, seen)``, one per sample held here."""
        return self._rows if self.total is None else self._rows[: self.num_rows]

    @table.setter
    def table(self, value: Tensor) -> None:
        if value.shape != (self.num_rows, 3):
            raise ValueError(f"table must be ({self.num_rows}, 3), got {tuple(value.shape)}")
        self._rows = value if self.total is None else torch.cat([value, value.new_zeros(1, 3)])

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
        return self.table.device

    def to(self, device: torch.device | str) -> None:
        self._rows = self._rows.to(device)

    def update(self, indices: Tensor, losses: Tensor) -> None:
        """Fold one batch of losses in (no host sync)."""
        losses = losses.detach().to(torch.float32)
        idx, loss, count = merge_duplicates(indices, losses)
        if self.total is not None:  # other shards' samples go to the spare row, unchanged
            idx = idx - self.offset
            inside = (idx >= 0) & (idx < self.num_rows)
            idx = torch.where(inside, idx, self.num_rows)
            count = torch.where(inside, count, 0)
        old = self._rows.index_select(0, idx)
        mean, var, seen = old.unbind(1)
        first = seen == 0
        diff = loss - mean
        new_mean = torch.where(first, loss, mean + self.alpha * diff)
        new_var = torch.where(first, 0.0, (1 - self.alpha) * (var + self.alpha * diff * diff))
        new = torch.stack([new_mean, new_var, seen + 1], dim=1)
        new = torch.where((count > 0).unsqueeze(1), new, old)
        self._rows.index_copy_(0, idx, new)
