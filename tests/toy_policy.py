"""A method defined in this one file: importing it is all it takes to use it everywhere.

(Tests register it through the ``toy_method`` fixture, which also removes it afterwards.)
"""

from dataprune.policies import Option, Policy, Selection, SelectionContext, register, unseen_first


@register
class LowestLoss(Policy):
    """Keep the k samples with the lowest EMA loss (unseen first)."""

    name = "toy-lowest-loss"
    options = {"margin": Option(0.0, "added to every loss", low=0.0, flag="toy-margin")}

    def select(self, ctx: SelectionContext) -> Selection:
        scores = -(ctx.stats.mean + self.params["margin"])
        return ctx.selection(ctx.top_k(unseen_first(scores, ctx.stats), ctx.k))
