"""``orderdp``: a uniform share of the data, then its highest losses (Xu et al., OrderDP)."""

from __future__ import annotations

import math

import torch

from .base import Option, Policy, Selection, SelectionContext, unseen_first
from .registry import register


@register
class OrderDP(Policy):
    """OrderDP (ICLR 2026): a uniform random share, then the top of it by loss.

    Each selection draws a fresh uniform share of ``round(r N)`` samples and keeps the ``k``
    with the highest latest loss among them (unseen samples first, as OrderDP starts every
    score above the usual losses). OrderDP's own knobs are the share ``r`` (0.75) and the kept
    fraction of it ``q`` (0.85), so it prunes ``1 - r q`` (0.36); here ``prune`` sets ``k`` and
    ``q = k / (r N)`` follows. Where ``prune`` asks for more than the share holds
    (``k > r N``, a prune rate below ``1 - r``), the share grows to ``k`` and is kept whole.
    Losses are averaged unweighted, as OrderDP's reference code does.
    """

    name = "orderdp"
    options = {
        "share": Option(0.75, "r: the uniform share drawn first", 0.01, 1.0, flag="orderdp-share"),
    }
    default_alpha = 1.0  # the latest loss, as OrderDP scores

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        share = ctx.random_mask(max(k, round(self.params["share"] * n)), "share")
        scores = torch.where(share, unseen_first(ctx.stats.mean, ctx.stats), -math.inf)
        return ctx.selection(ctx.top_k(scores, k))
