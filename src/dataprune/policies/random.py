"""``static-random`` and ``random``: uniform subsets, drawn once or at every selection."""

from __future__ import annotations

import torch

from .base import Policy, Selection, SelectionContext
from .registry import register


@register
class StaticRandom(Policy):
    """One uniform random subset of size k, drawn once from the seed and kept for the run."""

    name = "static-random"
    reselects = False

    def select(self, ctx: SelectionContext) -> Selection:
        mask = ctx.random_mask(ctx.k)
        weight_map = torch.full((ctx.num_local,), ctx.num_samples / ctx.k, device=ctx.device)
        return ctx.selection(mask, weight_map)


@register
class Random(StaticRandom):
    """A fresh uniform subset of size k at each selection; ``P(kept) = k / N``."""

    name = "random"
    reselects = True
