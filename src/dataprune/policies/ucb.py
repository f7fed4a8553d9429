"""``ucb``: keep the top k of an upper confidence bound on the loss (Raju et al.)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..stats import SampleStats
from .base import Option, Policy, Selection, SelectionContext, unseen_first
from .registry import register


@register
class UCB(Policy):
    """Upper confidence bound over the loss: keep the top k of ``mu + c * bonus``.

    ``mu`` is the EMA loss and ``bonus`` is its EMA standard deviation ``sigma``
    (``bonus="std"``, default) or variance ``sigma**2`` (``bonus="var"``). Unseen samples first.
    """

    name = "ucb"
    options = {
        "c": Option(1.0, "weight of the bonus", low=0.0, flag="ucb-c"),
        "bonus": Option(
            "std", "the bonus: EMA std or variance", choices=("std", "var"), flag="ucb-bonus"
        ),
    }

    def scores(self, stats: SampleStats) -> Tensor:
        var = stats.var.clamp_min(0)
        bonus = var.sqrt() if self.params["bonus"] == "std" else var
        # Where the bonus is 0 it adds nothing, even if c * 0 would be inf * 0 in float32.
        weighted = torch.where(bonus > 0, self.params["c"] * bonus, 0.0)
        return unseen_first(stats.mean + weighted, stats)

    def select(self, ctx: SelectionContext) -> Selection:
        return ctx.selection(ctx.top_k(self.scores(ctx.stats), ctx.k))
