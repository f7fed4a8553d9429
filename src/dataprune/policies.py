"""Selection policies: statistics in, the kept indices and their loss weights out.

Each policy is a small class whose ``select`` depends only on its arguments (and, for ``rs2``, on
a cache that is a pure function of them), so a run can be resumed or replayed exactly. Scores of
samples never seen are ``+inf``: a score-based rule always tries unseen samples first, so none is
starved (the InfoBatch epoch-0 trap).

``weights`` are importance weights ``1 / P(kept)`` for the kept samples; the pruner applies them
to the loss when ``rescale`` is on (``infobatch`` always). Samples kept with certainty (a
deterministic top-k pick) get weight 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ._validation import check_choice, check_float
from .distributed import all_reduce_sum
from .selection import RandomStream, random_mask, top_k_mask
from .stats import SampleStats

# Streams of counter-based random numbers, one per use, so that no two uses share numbers.
_RANDOM, _TIES, _EXPLORE, _EXPLORE_TIES = 1, 2, 3, 4
_INFOBATCH_STREAMS = ((5, 6), (7, 8))  # (drop, ties) streams of the low and the high group
_RS2_ORDER = 0x5252


@dataclass(frozen=True)
class Selection:
    """The kept samples, sorted ascending, and their importance weights (``None``: all 1)."""

    indices: Tensor
    weights: Tensor | None = None


@dataclass(frozen=True)
class SelectionContext:
    """Everything a policy may read: statistics, budget, round number and seed.

    Random choices come from counter-based streams hashed from ``(seed, round, stream, global
    index)``, so a selection is a pure function of these fields. With sharded statistics
    (``Pruner(..., shard_stats=True)`` under torch.distributed) ``stats`` holds only the rows
    ``[offset, offset + num_local)`` of the ``total`` samples; a policy then works on those rows,
    uses :meth:`top_k`, :meth:`random_mask` and :meth:`global_sum` for anything global, and
    returns the kept samples among its rows (global indices); the pruner gathers the ranks'
    parts. Unsharded, ``offset`` is 0 and ``total`` the number of rows.
    """

    stats: SampleStats
    k: int
    round: int
    seed: int
    offset: int = 0
    total: int | None = None  # number of samples over all shards; None: unsharded

    @property
    def sharded(self) -> bool:
        return self.total is not None

    @property
    def num_samples(self) -> int:
        """N, the number of samples over all shards."""
        return self.num_local if self.total is None else self.total

    @property
    def num_local(self) -> int:
        """Rows of statistics this context holds (N unless sharded)."""
        return self.stats.table.shape[0]

    @property
    def device(self) -> torch.device:
        return self.stats.device

    @property
    def shard(self) -> tuple[int, int] | None:
        return (self.offset, self.total) if self.sharded else None

    def local_indices(self) -> Tensor:
        """Global indices of the rows held here."""
        return torch.arange(self.offset, self.offset + self.num_local, device=self.device)

    def stream(self, stream: int) -> RandomStream:
        return RandomStream.of(self.seed, self.round, stream)

    def uniform(self, stream: int) -> Tensor:
        """One hashed float32 in [0, 1) per row held here."""
        return self.stream(stream).uniform(self.local_indices())

    def top_k(self, scores: Tensor, k: int, ties: int) -> Tensor:
        """Mask of the rows among the global top k of ``scores`` (ties: hashed stream)."""
        return top_k_mask(scores, k, self.stream(ties), self.shard)

    def random_mask(self, k: int, stream: int) -> Tensor:
        """Mask of the rows among k of all N samples drawn uniformly without replacement."""
        return random_mask(self.num_local, k, self.stream(stream), self.device, self.shard)

    def global_sum(self, value: Tensor) -> Tensor:
        """``value`` summed over the shards (itself when unsharded)."""
        return all_reduce_sum(value) if self.sharded else value


def _from_mask(ctx: SelectionContext, mask: Tensor, weight_map: Tensor | None = None) -> Selection:
    rows = mask.nonzero().squeeze(1)
    weights = None if weight_map is None else weight_map[rows]
    return Selection(rows + ctx.offset, weights)


def _unseen_first(scores: Tensor, stats: SampleStats) -> Tensor:
    return torch.where(stats.seen, scores, math.inf)


class Policy:
    """Base class. Subclasses set ``name`` and ``defaults`` (their options), define ``select``."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    reselects: ClassVar[bool] = True  # False: one subset for the whole run

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise TypeError(
                f"unknown option {unknown[0]!r} for method={self.name!r}; valid options: {valid}"
            )
        self.options = {**self.defaults, **options}

    def select(self, ctx: SelectionContext) -> Selection:
        raise NotImplementedError


class Full(Policy):
    """Every sample, every epoch: ``S = {0..N-1}``."""

    name = "full"

    def select(self, ctx: SelectionContext) -> Selection:
        return Selection(ctx.local_indices())


class Random(Policy):
    """A fresh uniform subset of size k at each selection; ``P(kept) = k / N``."""

    name = "random"

    def select(self, ctx: SelectionContext) -> Selection:
        mask = ctx.random_mask(ctx.k, _RANDOM)
        weight_map = torch.full((ctx.num_local,), ctx.num_samples / ctx.k, device=ctx.device)
        return _from_mask(ctx, mask, weight_map)


class StaticRandom(Random):
    """One uniform random subset of size k, drawn once from the seed and kept for the run."""

    name = "static-random"
    reselects = False


class RS2(Policy):
    """Random subsets without replacement across selections (Okanovic et al., RS2).

    Round ``r`` takes positions ``[r k, (r + 1) k)`` of the sequence ``order_0 ++ order_1 ++ ...``
    where each ``order_c`` is a permutation of all N samples, so every sample is used once per
    cycle before any repeats. When a round straddles two cycles, the samples it took from the end
    of ``order_c`` are moved to the end of ``order_{c+1}``, so a round never holds a sample twice.
    ``P(kept) = k / N``.
    """

    name = "rs2"

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._orders: dict[int, Tensor] = {}
        self._key: tuple[int, int, int] | None = None

    def _order(self, cycle: int, n: int, k: int, seed: int, device: torch.device) -> Tensor:
        # The permutations do not depend on the statistics: every rank computes them whole,
        # by sorting hashed keys, so they are the same on every rank and every device.
        if self._key != (n, k, seed):
            self._orders, self._key = {}, (n, k, seed)
        start = max([c for c in self._orders if c <= cycle], default=-1)
        for c in range(start + 1, cycle + 1):
            keys = RandomStream.of(seed, _RS2_ORDER, c).bits(torch.arange(n, device=device))
            perm = torch.sort(keys, stable=True).indices
            round_start = (c * n // k) * k  # first position of the round that meets cycle c
            tail = c * n - round_start
            if c > 0 and tail > 0:
                in_tail = torch.zeros(n, dtype=torch.bool, device=device)
                in_tail[self._orders[c - 1][n - tail :]] = True
                perm = torch.cat([perm[~in_tail[perm]], perm[in_tail[perm]]])
            self._orders[c] = perm
            self._orders.pop(c - 2, None)
        return self._orders[cycle]

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        position = ctx.round * k
        cycle, offset = divmod(position, n)
        order = self._order(cycle, n, k, ctx.seed, ctx.device)
        taken = order[offset : offset + k]
        if taken.numel() < k:
            following = self._order(cycle + 1, n, k, ctx.seed, ctx.device)
            taken = torch.cat([taken, following[: k - taken.numel()]])
        rows = taken - ctx.offset
        mask = torch.zeros(ctx.num_local, dtype=torch.bool, device=ctx.device)
        mask[rows[(rows >= 0) & (rows < ctx.num_local)]] = True
        weight_map = torch.full((ctx.num_local,), n / k, device=ctx.device)
        return _from_mask(ctx, mask, weight_map)


class EpsilonGreedy(Policy):
    """Exploit the highest running losses, explore uniformly (Raju et al. 2021).

    ``eps_r = epsilon * epsilon_decay**r``. Keep the ``round((1 - eps_r) k)`` samples with the
    highest EMA loss ``mu`` (unseen first), plus ``eps_r k`` drawn uniformly from the rest, each
    kept with ``P = eps_r k / (N - (1 - eps_r) k)``. With ``epsilon=1`` this is exactly ``random``.
    """

    name = "epsilon-greedy"
    defaults = {"epsilon": 0.1, "epsilon_decay": 1.0}

    def __init__(self, **options: Any):
        super().__init__(**options)
        check_float("epsilon", self.options["epsilon"], low=0.0, high=1.0)
        check_float("epsilon_decay", self.options["epsilon_decay"], low=0.0, high=1.0)

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        eps = self.options["epsilon"] * self.options["epsilon_decay"] ** ctx.round
        n_greedy = round((1 - eps) * k)
        if n_greedy == 0:
            return Random().select(ctx)
        greedy = ctx.top_k(_unseen_first(ctx.stats.mean, ctx.stats), n_greedy, _TIES)
        # Shift (not fill) the greedy keys below the rest: a large block of equal values sends
        # numpy.partition into its slow path (20x at 10M samples); the choice is the same.
        keys = ctx.uniform(_EXPLORE)
        keys = torch.where(greedy, keys - 2.0, keys)
        explore = ctx.top_k(keys, k - n_greedy, _EXPLORE_TIES)
        p_explore = (k - n_greedy) / (n - n_greedy)
        weight_map = torch.where(greedy, 1.0, 1.0 / p_explore if p_explore > 0 else 1.0)
        return _from_mask(ctx, greedy | explore, weight_map)


class UCB(Policy):
    """Upper confidence bound over the loss: keep the top k of ``mu + c * bonus``.

    ``mu`` is the EMA loss and ``bonus`` is its EMA standard deviation ``sigma``
    (``bonus="std"``, default) or variance ``sigma**2`` (``bonus="var"``). Unseen samples first.
    """

    name = "ucb"
    defaults = {"c": 1.0, "bonus": "std"}

    def __init__(self, **options: Any):
        super().__init__(**options)
        check_float("c", self.options["c"], low=0.0)
        check_choice("bonus", self.options["bonus"], ("std", "var"))

    def scores(self, stats: SampleStats) -> Tensor:
        var = stats.var.clamp_min(0)
        bonus = var.sqrt() if self.options["bonus"] == "std" else var
        return _unseen_first(stats.mean + self.options["c"] * bonus, stats)

    def select(self, ctx: SelectionContext) -> Selection:
        return _from_mask(ctx, ctx.top_k(self.scores(ctx.stats), ctx.k, _TIES))


class InfoBatch(Policy):
    """Soft pruning of well-learned samples with unbiased rescaling (Qin et al., InfoBatch).

    Samples seen so far whose loss ``mu`` is below the mean of the seen samples form the "low"
    group L; unseen samples belong to the rest H, so they are never in the group pruned first.
    To leave out exactly ``m = N - k`` samples, drop ``d_L = min(m, |L|)`` uniformly from L and
    any remainder uniformly from H. Kept
    samples of a group G are weighted ``|G| / (|G| - d_G)`` = 1 / P(kept), so the expected summed
    loss of the epoch equals the full-data one. Use it with ``anneal_epochs`` (the pruner's
    default for this method is the final 12.5% of epochs) and ``alpha=1`` (latest loss).
    """

    name = "infobatch"

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        stats = ctx.stats
        seen = stats.seen
        # The mean of the seen samples' losses: a float64 sum (over shards), rounded to float32.
        seen_sum = ctx.global_sum(
            torch.stack([stats.mean[seen].double().sum(), seen.sum().double()])
        )
        count = int(seen_sum[1])
        threshold = float(torch.tensor(float(seen_sum[0]) / count).float()) if count else 0.0
        low = seen & (stats.mean < threshold)
        keep = torch.ones(ctx.num_local, dtype=torch.bool, device=ctx.device)
        weight_map = torch.ones(ctx.num_local, device=ctx.device)
        to_drop = n - k
        for (drop_stream, tie_stream), group in zip(_INFOBATCH_STREAMS, (low, ~low), strict=True):
            size = int(ctx.global_sum(group.sum()))
            drop = min(to_drop, size)
            if drop == 0:
                continue
            keys = ctx.uniform(drop_stream)
            keys = torch.where(group, keys, keys + 2.0)  # shifted, not filled: see above
            dropped = ctx.top_k(-keys, drop, tie_stream)
            keep &= ~dropped
            if size > drop:
                weight_map = torch.where(group, size / (size - drop), weight_map)
            to_drop -= drop
        return _from_mask(ctx, keep, weight_map)


class StaticScore(Policy):
    """Keep the top k of a fixed score vector ``scores`` (length N, finite; higher = keep)."""

    name = "static-score"
    defaults = {"scores": None}
    reselects = False

    def __init__(self, **options: Any):
        super().__init__(**options)
        scores = self.options["scores"]
        if scores is None:
            raise TypeError("method='static-score' needs scores=<tensor of one score per sample>")
        scores = torch.as_tensor(scores, dtype=torch.float32).detach().flatten()
        if not bool(torch.isfinite(scores).all()):
            bad = int((~torch.isfinite(scores)).sum())
            raise ValueError(f"scores holds {bad} NaN or inf values; every score must be finite")
        self.options["scores"] = scores

    def check_length(self, num_samples: int) -> None:
        length = self.options["scores"].numel()
        if length != num_samples:
            raise ValueError(
                f"scores has {length} entries but num_samples={num_samples}; "
                "pass one score per training sample"
            )

    def select(self, ctx: SelectionContext) -> Selection:
        scores = self.options["scores"][ctx.offset : ctx.offset + ctx.num_local].to(ctx.device)
        return _from_mask(ctx, ctx.top_k(scores, ctx.k, _TIES))


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (Full, StaticRandom, Random, RS2, EpsilonGreedy, UCB, InfoBatch, StaticScore)
}
