"""``kakurenbo``: hide the lowest losses among confidently correct samples (Nguyen et al.)."""

from __future__ import annotations

import math

import torch

from ..selection import Stream
from .base import Option, Policy, Selection, SelectionContext
from .registry import register


@register
class Kakurenbo(Policy):
    """KAKURENBO (Nguyen et al., NeurIPS 2023): adaptively hiding samples.

    Each epoch hides ``m = N - k`` samples (``F_e = m / N``, from ``prune`` and its schedule):
    those with the lowest latest loss among the samples that *qualify*, whose latest prediction
    (``record(..., correct=, confidence=)``) was correct with confidence at least ``tau``. Any
    other candidate is "moved back" into training, as in the paper. KAKURENBO hides *up to*
    ``F_e N``; here the hidden count is exact, so every epoch's size, ``total_steps``, the
    sampler and every rank agree ahead, and :meth:`dataprune.Pruner.lr_scale`'s
    ``1 / (1 - F_e)`` compensates exactly the steps left out. When fewer than ``m`` qualify
    (the first pruned epoch, before any prediction, has none), all of them are hidden and the
    rest are drawn uniformly from the others, as ``infobatch`` fills past its low group. With
    at least ``m`` qualifying this is KAKURENBO's rule whenever the ``m`` lowest losses all
    qualify: with plain cross-entropy from the same forward pass and ``tau > 0.5``, qualifying
    means a loss of at most ``-log tau``, so they do.

    The paper lowers F over training (F, then 0.8F, 0.6F, 0.4F at its LR milestones): pass
    ``prune_schedule="linear"`` (or a callable) with ``prune_end``. Hidden samples keep stale
    statistics unless refreshed: forward :meth:`dataprune.Pruner.hidden_indices` after each
    epoch without gradients and record them, as the paper does, then restore the model's
    buffers (BatchNorm's statistics), as the harness does.
    """

    name = "kakurenbo"
    options = {
        "tau": Option(
            0.7, "least confidence of a correct prediction to hide", 0.0, 1.0, flag="kakurenbo-tau"
        ),
    }
    default_alpha = 1.0  # the latest loss, as the paper ranks by
    uses_predictions = True
    scales_lr = True

    def select(self, ctx: SelectionContext) -> Selection:
        hide = ctx.num_samples - ctx.k
        stats = ctx.stats
        confidence = stats.correct_confidence
        # > 0: correct (a wrong or unknown prediction is stored as 0, whatever tau)
        qualifies = stats.seen & (confidence > 0) & (confidence >= self.params["tau"])
        if int(ctx.global_sum(qualifies.sum())) >= hide:
            scores = torch.where(qualifies, -stats.mean, -math.inf)
            hidden = ctx.top_k(scores, hide, Stream.KAKURENBO_TIES)
        else:  # every qualifying sample (shifted above all keys), then uniformly from the rest
            keys = ctx.uniform(Stream.KAKURENBO_FILL)
            keys = torch.where(qualifies, keys + 2.0, keys)
            hidden = ctx.top_k(keys, hide, Stream.KAKURENBO_FILL_TIES)
        return ctx.selection(~hidden)
