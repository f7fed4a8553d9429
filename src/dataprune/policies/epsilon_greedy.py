"""``epsilon-greedy``: exploit the highest running losses, explore uniformly (Raju et al.)."""

from __future__ import annotations

import torch

from .base import Option, Policy, Selection, SelectionContext, unseen_first
from .random import Random
from .registry import register


@register
class EpsilonGreedy(Policy):
    """Exploit the highest running losses, explore uniformly (Raju et al. 2021).

    ``eps_r = epsilon * epsilon_decay**r``. Keep the ``round((1 - eps_r) k)`` samples with the
    highest EMA loss ``mu`` (unseen first), plus ``eps_r k`` drawn uniformly from the rest, each
    kept with ``P = eps_r k / (N - (1 - eps_r) k)``. With ``epsilon=1`` this is exactly ``random``.
    """

    name = "epsilon-greedy"
    streams = {"explore": 3, "explore-ties": 4}
    options = {
        "epsilon": Option(0.1, "share of the budget explored uniformly", low=0.0, high=1.0),
        "epsilon_decay": Option(1.0, "epsilon is multiplied by this each round", low=0.0, high=1.0),
    }

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        eps = self.params["epsilon"] * self.params["epsilon_decay"] ** ctx.round
        n_greedy = round((1 - eps) * k)
        if n_greedy == 0:
            return Random().select(ctx)
        greedy = ctx.top_k(unseen_first(ctx.stats.mean, ctx.stats), n_greedy)
        # Shift (not fill) the greedy keys below the rest: a large block of equal values sends
        # numpy.partition into its slow path (20x at 10M samples); the choice is the same.
        keys = ctx.uniform("explore")
        keys = torch.where(greedy, keys - 2.0, keys)
        explore = ctx.top_k(keys, k - n_greedy, "explore-ties")
        p_explore = (k - n_greedy) / (n - n_greedy)
        weight_map = torch.where(greedy, 1.0, 1.0 / p_explore if p_explore > 0 else 1.0)
        return ctx.selection(greedy | explore, weight_map)
