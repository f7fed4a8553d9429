"""``full``: every sample, every epoch (the baseline)."""

from __future__ import annotations

from .base import Policy, Selection, SelectionContext
from .registry import register


@register
class Full(Policy):
    """Every sample, every epoch: ``S = {0..N-1}``."""

    name = "full"
    prunes = False

    def select(self, ctx: SelectionContext) -> Selection:
        return Selection(ctx.local_indices())
