"""``seta``: a uniform share, grouped by loss, trained through a sliding window (Zhou et al.)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import FLOAT32_MAX
from .base import Option, Policy, Selection, SelectionContext
from .registry import register


@register
class SeTa(Policy):
    """Scale Efficient Training (Zhou et al., CVPR 2025): easy-to-hard windows over loss groups.

    Each selection keeps a uniform share ``c = round((1 - r) N)`` of the dataset (drawn afresh),
    ranks it by the latest loss, easy to hard, and cuts the ranks into ``G`` equal groups (the
    reference code clusters with 1-D k-means; equal-size quantile groups keep the budget exact
    and cost two O(N) partitions per selection, no sort). It trains on a window of
    ``W = round(w G)`` consecutive groups that slides one group per selection, cyclically: round
    ``t`` starts at group ``t mod G``. The final ``anneal`` share of the selections draw k
    samples uniformly instead (SeTa's annealing on a uniform share). The first selection, before
    any loss is seen, is uniform too (SeTa trains its first epoch on the whole set:
    ``warmup_epochs=1`` does that).

    At ``prune = 1 - (1 - r) W / G`` (0.28 at the defaults) the window is exactly the budget k.
    At a higher rate it is thinned to k uniformly; at a lower rate it is topped up to k with
    samples drawn uniformly from outside it. Never-seen samples rank as the hardest.
    """

    name = "seta"
    streams = {"share": 9, "rank-ties": 11, "fit": 12, "fit-ties": 13, "anneal": 14}
    options = {
        "r": Option(0.1, "share dropped uniformly before grouping", 0.0, 0.99, flag="seta-r"),
        "groups": Option(5, "G, loss groups, easy to hard", 1, 10_000, flag="seta-groups"),
        "window": Option(0.9, "w, share of the groups trained", 0.01, 1.0, flag="seta-window"),
        "anneal": Option(
            0.125, "share of the final selections drawn uniformly", 0.0, 1.0, flag="seta-anneal"
        ),
    }
    default_alpha = 1.0  # groups by the latest loss

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        stats = ctx.stats
        annealing = ctx.round >= ctx.rounds - round(self.params["anneal"] * ctx.rounds)
        if annealing or not int(ctx.global_sum(stats.seen.sum())):
            return ctx.selection(ctx.random_mask(k, "anneal"))
        c = max(k, round((1 - self.params["r"]) * n))
        share = ctx.random_mask(c, "share")
        groups = self.params["groups"]
        width = min(groups, max(1, round(self.params["window"] * groups)))
        first = ctx.round % groups
        start = round(first * c / groups)
        end = round((first + width) * c / groups)  # past c when the window wraps around
        # Candidates score -loss (unseen: the largest loss), the rest -inf: the m easiest
        # candidates are then the top m, and every boundary is one exact (sharded) partition.
        loss = torch.where(stats.seen, stats.mean, FLOAT32_MAX).clamp(max=FLOAT32_MAX)
        scores = torch.where(share, -loss, -math.inf)

        def easiest(m: int) -> Tensor:
            return ctx.top_k(scores, m, "rank-ties")

        if end <= c:
            window = easiest(end) & ~easiest(start)
        else:
            window = (share & ~easiest(start)) | easiest(end - c)
        return ctx.selection(self._fit(ctx, window, int(ctx.global_sum(window.sum()))))

    @staticmethod
    def _fit(ctx: SelectionContext, window: Tensor, size: int) -> Tensor:
        """``window`` thinned, or topped up, to exactly ``ctx.k`` samples, uniformly."""
        k = ctx.k
        if size == k:
            return window
        keys = ctx.uniform("fit")
        if size > k:  # k of the window: its keys shifted above everything else
            return ctx.top_k(torch.where(window, keys + 2.0, keys), k, "fit-ties")
        # k - size of the rest: the window's keys shifted below everything else
        return window | ctx.top_k(torch.where(window, keys - 2.0, keys), k - size, "fit-ties")
