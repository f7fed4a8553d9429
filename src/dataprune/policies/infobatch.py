"""``infobatch``: soft pruning of well-learned samples with rescaling (Qin et al., InfoBatch)."""

from __future__ import annotations

import torch

from .base import Option, Policy, Selection, SelectionContext
from .registry import register

# (drop, ties) streams of the below-mean group and of the rest
_GROUP_STREAMS = (("low-drop", "low-ties"), ("high-drop", "high-ties"))


@register
class InfoBatch(Policy):
    """Soft pruning of well-learned samples with bounded rescaling (Qin et al., InfoBatch).

    Samples seen so far whose loss ``mu`` is below the mean of the seen samples form the "low"
    group L; unseen samples belong to the rest H, so they are never in the group pruned first.
    To leave out exactly ``m = N - k`` samples, drop ``d_L = min(m, |L|)`` uniformly from L and
    any remainder uniformly from H.

    Kept samples of a group G that were seen are weighted ``min(|G| / (|G| - d_G),
    max_weight)``: 1 / P(kept), so the epoch's expected summed loss equals the full-data one,
    as long as that stays within InfoBatch's own bound ``1 / (1 - r)`` (``max_weight``, 2 at its
    default r = 0.5). Unbounded, the weights grow without limit as ``prune`` approaches
    ``|L| / N`` (and past it, every kept sample is scaled by ``|H| / k``), and the step size with
    them; bounded, the step is at most ``max_weight`` times an unweighted one at any prune rate,
    and the estimate is biased towards the high-loss samples where the bound binds. Unseen
    samples weigh 1: no loss has told them apart yet, so the first epoch trains at weight 1.

    By default it trains on full data in the final 12.5% of epochs, rescales, and keeps the
    latest loss (``alpha=1``), as InfoBatch does.
    """

    name = "infobatch"
    streams = {"low-drop": 5, "low-ties": 6, "high-drop": 7, "high-ties": 8}
    options = {
        "max_weight": Option(
            2.0, "largest loss weight, InfoBatch's 1/(1-r) (2: its r=0.5)", low=1.0, high=1e6
        ),
    }
    default_alpha = 1.0
    default_rescale = True
    anneal_fraction = 0.125

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
        for (drop_stream, tie_stream), group in zip(_GROUP_STREAMS, (low, ~low), strict=True):
            size = int(ctx.global_sum(group.sum()))
            drop = min(to_drop, size)
            if drop == 0:
                continue
            keys = ctx.uniform(drop_stream)
            # Shifted, not filled: a block of equal keys is numpy.partition's slow path.
            keys = torch.where(group, keys, keys + 2.0)
            dropped = ctx.top_k(-keys, drop, tie_stream)
            keep &= ~dropped
            if size > drop:
                weight = min(size / (size - drop), self.params["max_weight"])
                weight_map = torch.where(group & seen, weight, weight_map)
            to_drop -= drop
        return ctx.selection(keep, weight_map)
