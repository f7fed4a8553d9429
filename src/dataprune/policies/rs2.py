"""``rs2``: random subsets without replacement across selections (Okanovic et al., RS2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..selection import RandomStream, Stream
from .base import Policy, Selection, SelectionContext
from .registry import register


@register
class RS2(Policy):
    """Random subsets without replacement across selections: every sample once per cycle.

    Round ``r`` takes positions ``[r k, (r + 1) k)`` of the sequence ``order_0 ++ order_1 ++ ...``
    where each ``order_c`` is a permutation of all N samples, so every sample is used once per
    cycle before any repeats. When a round straddles two cycles, the samples it took from the end
    of ``order_c`` are moved to the end of ``order_{c+1}``, so a round never holds a sample twice.
    ``P(kept) = k / N``.

    Memory: the permutations do not depend on the statistics, so every rank computes them whole
    (also under ``shard_stats``): at most two int32 permutations, 8 bytes a sample. After a
    resume the first selection recomputes the cycles up to the current one (one sort of N keys
    per cycle, once).
    """

    name = "rs2"

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._orders: dict[int, Tensor] = {}
        self._key: tuple[int, int, int] | None = None

    def _order(self, cycle: int, n: int, k: int, seed: int, device: torch.device) -> Tensor:
        if self._key != (n, k, seed):
            self._orders, self._key = {}, (n, k, seed)
        start = max([c for c in self._orders if c <= cycle], default=-1)
        for c in range(start + 1, cycle + 1):
            keys = RandomStream.of(seed, Stream.RS2_ORDER, c).bits(torch.arange(n, device=device))
            perm = torch.sort(keys, stable=True).indices.to(torch.int32)
            round_start = (c * n // k) * k  # first position of the round that meets cycle c
            tail = c * n - round_start
            if c > 0 and tail > 0:
                in_tail = torch.zeros(n, dtype=torch.bool, device=device)
                in_tail[self._orders[c - 1][n - tail :].long()] = True
                moved = in_tail[perm.long()]
                perm = torch.cat([perm[~moved], perm[moved]])
            self._orders[c] = perm
            self._orders.pop(c - 2, None)
        return self._orders[cycle]

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        cycle, offset = divmod(ctx.round * k, n)
        order = self._order(cycle, n, k, ctx.seed, ctx.device)
        taken = order[offset : offset + k]
        if taken.numel() < k:
            following = self._order(cycle + 1, n, k, ctx.seed, ctx.device)
            taken = torch.cat([taken, following[: k - taken.numel()]])
        rows = taken.long() - ctx.offset
        mask = torch.zeros(ctx.num_local, dtype=torch.bool, device=ctx.device)
        mask[rows[(rows >= 0) & (rows < ctx.num_local)]] = True
        weight_map = torch.full((ctx.num_local,), n / k, device=ctx.device)
        return ctx.selection(mask, weight_map)
