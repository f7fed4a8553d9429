"""``selective-backprop``: back-propagate only each batch's highest losses (Jiang et al. 2019)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedule import budget
from .base import Policy, Selection, SelectionContext
from .registry import register


@register
class SelectiveBackprop(Policy):
    """Selective backprop (Jiang et al. 2019; Composer's SelectiveBackprop).

    Every epoch forwards every sample; :meth:`dataprune.Pruner.loss` forwards each batch
    without gradients, records its losses, then forwards and back-propagates only its
    ``max(1, round((1 - prune) B))`` highest losses. Its known cost is that first forward pass
    of every sample, so ``epoch_size`` and ``samples_used`` count every sample, and
    ``summary()`` counts the samples forwarded and back-propagated apart.
    """

    name = "selective-backprop"
    prunes = False  # no epoch leaves a sample out: the batches are thinned instead
    selects_in_batch = True

    def select(self, ctx: SelectionContext) -> Selection:
        return Selection(ctx.local_indices())

    def batch_rows(self, losses: Tensor, prune: float) -> Tensor:
        """The highest ``max(1, round((1 - prune) B))`` losses (NaN counts as the lowest,
        equal losses go to the earlier row), in ascending order, with no host sync."""
        kept = budget(losses.numel(), prune) if losses.numel() else 0
        keys = losses.detach().float().nan_to_num(-math.inf, math.inf, -math.inf)
        order = torch.sort(keys, descending=True, stable=True).indices
        return order[:kept].sort().values
