"""``selective-backprop``: back-propagate only each batch's highest losses (Jiang et al. 2019)."""

from __future__ import annotations

from .base import Policy, Selection, SelectionContext
from .registry import register


@register
class SelectiveBackprop(Policy):
    """Selective backprop (Jiang et al. 2019; Composer's SelectiveBackprop).

    Every epoch forwards every sample; within each batch only the
    ``max(1, round((1 - prune) B))`` highest losses are back-propagated
    (:meth:`dataprune.Pruner.select_batch`). Its known cost is the full forward pass, so
    ``epoch_size`` and ``samples_used`` count every sample, and ``summary()`` counts the
    back-propagated ones apart (``samples_backpropagated``).
    """

    name = "selective-backprop"
    prunes = False  # no epoch leaves a sample out: the batches are thinned instead
    selects_in_batch = True

    def select(self, ctx: SelectionContext) -> Selection:
        return Selection(ctx.local_indices())
