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
from .selection import make_generator, random_mask, top_k_mask
from .stats import SampleStats


@dataclass(frozen=True)
class Selection:
    """The kept samples, sorted ascending, and their importance weights (``None``: all 1)."""

    indices: Tensor
    weights: Tensor | None = None


@dataclass(frozen=True)
class SelectionContext:
    """Everything a policy may read: statistics, budget, round number and a seeded generator."""

    stats: SampleStats
    k: int
    round: int
    generator: torch.Generator
    seed: int

    @property
    def num_samples(self) -> int:
        return self.stats.table.shape[0]

    @property
    def device(self) -> torch.device:
        return self.stats.device


def _from_mask(mask: Tensor, weight_map: Tensor | None = None) -> Selection:
    indices = mask.nonzero().squeeze(1)
    weights = None if weight_map is None else weight_map[indices]
    return Selection(indices, weights)


def _unseen_first(scores: Tensor, stats: SampleStats) -> Tensor:
    return torch.where(stats.seen, scores, math.inf)


class Policy:
    """Base class. Subclasses set ``name``, ``defaults`` and ``needs_stats``, define ``select``."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    needs_stats: ClassVar[bool] = False  # whether record() statistics drive the choice
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
        return Selection(torch.arange(ctx.num_samples, device=ctx.device))


class Random(Policy):
    """A fresh uniform subset of size k at each selection; ``P(kept) = k / N``."""

    name = "random"

    def select(self, ctx: SelectionContext) -> Selection:
        mask = random_mask(ctx.num_samples, ctx.k, ctx.generator, ctx.device)
        weights = torch.full((ctx.k,), ctx.num_samples / ctx.k, device=ctx.device)
        return Selection(mask.nonzero().squeeze(1), weights)


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
        if self._key != (n, k, seed):
            self._orders, self._key = {}, (n, k, seed)
        start = max([c for c in self._orders if c <= cycle], default=-1)
        for c in range(start + 1, cycle + 1):
            gen = make_generator(device, seed, 0x5252, c)
            perm = torch.randperm(n, generator=gen, device=gen.device).to(device)
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
        mask = torch.zeros(n, dtype=torch.bool, device=ctx.device)
        mask[taken] = True
        return Selection(mask.nonzero().squeeze(1), torch.full((k,), n / k, device=ctx.device))


class EpsilonGreedy(Policy):
    """Exploit the highest running losses, explore uniformly (Raju et al. 2021).

    ``eps_r = epsilon * epsilon_decay**r``. Keep the ``round((1 - eps_r) k)`` samples with the
    highest EMA loss ``mu`` (unseen first), plus ``eps_r k`` drawn uniformly from the rest, each
    kept with ``P = eps_r k / (N - (1 - eps_r) k)``. With ``epsilon=1`` this is exactly ``random``.
    """

    name = "epsilon-greedy"
    defaults = {"epsilon": 0.1, "epsilon_decay": 1.0}
    needs_stats = True

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
        greedy = top_k_mask(_unseen_first(ctx.stats.mean, ctx.stats), n_greedy, ctx.generator)
        keys = torch.rand(n, generator=ctx.generator, device=ctx.generator.device)
        explore = top_k_mask(
            keys.to(ctx.device).masked_fill(greedy, -1.0), k - n_greedy, ctx.generator
        )
        p_explore = (k - n_greedy) / (n - n_greedy)
        weight_map = torch.where(greedy, 1.0, 1.0 / p_explore if p_explore > 0 else 1.0)
        return _from_mask(greedy | explore, weight_map)


class UCB(Policy):
    """Upper confidence bound over the loss: keep the top k of ``mu + c * bonus``.

    ``mu`` is the EMA loss and ``bonus`` is its EMA standard deviation ``sigma``
    (``bonus="std"``, default) or variance ``sigma**2`` (``bonus="var"``). Unseen samples first.
    """

    name = "ucb"
    defaults = {"c": 1.0, "bonus": "std"}
    needs_stats = True

    def __init__(self, **options: Any):
        super().__init__(**options)
        check_float("c", self.options["c"], low=0.0)
        check_choice("bonus", self.options["bonus"], ("std", "var"))

    def scores(self, stats: SampleStats) -> Tensor:
        var = stats.var.clamp_min(0)
        bonus = var.sqrt() if self.options["bonus"] == "std" else var
        return _unseen_first(stats.mean + self.options["c"] * bonus, stats)

    def select(self, ctx: SelectionContext) -> Selection:
        return _from_mask(top_k_mask(self.scores(ctx.stats), ctx.k, ctx.generator))


class InfoBatch(Policy):
    """Soft pruning of well-learned samples with unbiased rescaling (Qin et al., InfoBatch).

    Samples seen so far whose loss ``mu`` is below the mean of the seen samples form the "low"
    group L; unseen samples always stay. To leave out exactly ``m = N - k`` samples, drop
    ``d_L = min(m, |L|)`` uniformly from L and any remainder uniformly from the rest H. Kept
    samples of a group G are weighted ``|G| / (|G| - d_G)`` = 1 / P(kept), so the expected summed
    loss of the epoch equals the full-data one. Use it with ``anneal_epochs`` (the pruner's
    default for this method is the final 12.5% of epochs) and ``alpha=1`` (latest loss).
    """

    name = "infobatch"
    needs_stats = True

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        stats = ctx.stats
        seen = stats.seen
        threshold = stats.mean[seen].mean() if bool(seen.any()) else torch.tensor(0.0)
        low = seen & (stats.mean < threshold.to(ctx.device))
        keep = torch.ones(n, dtype=torch.bool, device=ctx.device)
        weight_map = torch.ones(n, device=ctx.device)
        to_drop = n - k
        for group in (low, ~low):
            size = int(group.sum())
            drop = min(to_drop, size)
            if drop == 0:
                continue
            keys = torch.rand(n, generator=ctx.generator, device=ctx.generator.device)
            keys = keys.to(ctx.device).masked_fill(~group, 2.0)
            dropped = top_k_mask(-keys, drop, ctx.generator)
            keep &= ~dropped
            if size > drop:
                weight_map = torch.where(group, size / (size - drop), weight_map)
            to_drop -= drop
        return _from_mask(keep, weight_map)


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
        scores = self.options["scores"].to(ctx.device)
        return _from_mask(top_k_mask(scores, ctx.k, ctx.generator))


POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (Full, StaticRandom, Random, RS2, EpsilonGreedy, UCB, InfoBatch, StaticScore)
}
