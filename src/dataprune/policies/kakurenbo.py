"""``kakurenbo``: hide the lowest losses among confidently learned samples (Nguyen et al.)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Option, Policy, Selection, SelectionContext
from .registry import register


@register
class Kakurenbo(Policy):
    """KAKURENBO (Nguyen et al., NeurIPS 2023): adaptively hiding samples.

    Each epoch hides ``m = N - k`` samples (``F_e = m / N``, from ``prune`` and its schedule):
    those with the lowest latest loss among the samples that *qualify*, whose latest loss is at
    most ``-log(tau)``. For cross-entropy that is a probability of at least ``tau`` on the true
    class, so with ``tau > 0.5`` exactly KAKURENBO's "predicted correctly with confidence at least
    tau", read from the loss alone. Any other candidate is "moved back" into training, as in the
    paper. KAKURENBO hides *up to* ``F_e N``; here the hidden count is exact, so every epoch's
    size, ``total_steps``, the sampler and every rank agree ahead. When fewer than ``m`` qualify
    (the first pruned epoch has no losses yet), all of them are hidden and the rest are drawn
    uniformly from the others, as ``infobatch`` fills past its low group.

    Its own steps, which :class:`dataprune.Pruner` runs through the hooks: the learning rate of
    a pruned epoch is scaled by ``1 / (1 - F_e)`` (:meth:`dataprune.Pruner.attach`), so that its
    fewer steps travel as far, and at an epoch's end every hidden sample is forwarded without
    gradients, in evaluation mode, and its loss recorded (:meth:`dataprune.Pruner.end_epoch`),
    so that one whose loss grew trains again. The paper lowers F over training (F, then 0.8F,
    0.6F, 0.4F at its LR milestones): pass ``prune_schedule="linear"`` with ``prune_end``.
    """

    name = "kakurenbo"
    options = {
        "tau": Option(
            0.7, "least probability on the true class to hide", 0.0, 1.0, flag="kakurenbo-tau"
        ),
    }
    default_alpha = 1.0  # the latest loss, as the paper ranks by

    def select(self, ctx: SelectionContext) -> Selection:
        hide = ctx.num_samples - ctx.k
        stats = ctx.stats
        tau = self.params["tau"]
        qualifies = stats.seen & (stats.mean <= (-math.log(tau) if tau > 0 else math.inf))
        if int(ctx.global_sum(qualifies.sum())) >= hide:
            scores = torch.where(qualifies, -stats.mean, -math.inf)
            hidden = ctx.top_k(scores, hide)
        else:  # every qualifying sample (shifted above all keys), then uniformly from the rest
            keys = ctx.uniform("fill")
            keys = torch.where(qualifies, keys + 2.0, keys)
            hidden = ctx.top_k(keys, hide, "fill-ties")
        return ctx.selection(~hidden)

    def lr_scale(self, num_samples: int, epoch_size: int) -> float:
        return num_samples / epoch_size

    def remeasure(self, ctx: SelectionContext, hidden: Tensor) -> Tensor:
        return hidden
