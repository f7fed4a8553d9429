"""``repb``: InfoBatch's soft pruning without its inconsistency biases (RePB, ICLR 2026)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..stats import SampleStats, merge_duplicates
from .base import Option, Policy, Selection, SelectionContext
from .registry import register


@register
class RePB(Policy):
    """RePB (ICLR 2026, "inconsistency biases in dynamic data pruning"), from the paper's
    description (there is no public code).

    InfoBatch compares each sample's stored loss with the mean of all stored losses, which were
    recorded by models of different ages; RePB compares it with the mean of the batches
    recorded around it instead, and replaces InfoBatch's fixed rescaling by each sample's
    selection frequency. Here:

    - Each recorded loss is stored with its difference from the local mean at that moment: an
      exponential mean over the batches so far with an effective window of ``window`` batches
      (``1 / window`` for each new batch's mean). The paper's window is a plain one of recent
      batches; the exponential one needs no history and updates with no host sync.
    - The samples whose stored loss was below its local mean form the pruned-first group L:
      ``N - k`` of them are left out uniformly (the rest, if L is smaller, uniformly from the
      others), so each is pruned with probability ``rho = (N - k) / |L|`` and a pruned sample,
      still in L, comes back with probability ``1 - rho``. The paper prunes each with a fixed
      probability; an exact count keeps epochs, steps and ranks in step.
    - Each kept sample's loss is weighted by ``E / N_i(E)``: the pruned epochs so far over
      those the sample was selected in, this one included, at most ``max_weight`` (the bound
      the paper leaves open; 2 is InfoBatch's at its r = 0.5). Unseen samples weigh 1.
    - The latest loss (``alpha=1``) and the final 12.5% of epochs on full data, as in
      InfoBatch, which RePB builds on.
    """

    name = "repb"
    options = {
        "window": Option(
            20, "batches in the local mean's window", 1, 1_000_000, flag="repb-window"
        ),
        "max_weight": Option(
            2.0, "largest loss weight E / N_i(E)", 1.0, 1e6, flag="repb-max-weight"
        ),
    }
    default_alpha = 1.0
    default_rescale = True
    anneal_fraction = 0.125

    def observe(self, stats: SampleStats, indices: Tensor, losses: Tensor) -> None:
        if not self.buffers:
            device = stats.device
            self.buffers = {
                # + a spare entry, for samples of other shards and without a loss
                "below_local": torch.zeros(stats.num_rows + 1, dtype=torch.bool, device=device),
                "local_mean": torch.zeros((), dtype=torch.float64, device=device),
                "local_batches": torch.zeros((), dtype=torch.int64, device=device),
            }
        losses = losses.detach().double()
        has_loss = ~losses.isnan()
        count = has_loss.sum()
        batch_mean = torch.where(has_loss, losses, 0.0).sum() / count.clamp_min(1)
        local, batches = self.buffers["local_mean"], self.buffers["local_batches"]
        step = torch.clamp(1.0 / (batches + 1).double(), min=1.0 / self.params["window"])
        local.copy_(torch.where(count > 0, local + step * (batch_mean - local), local))
        batches.add_((count > 0).long())
        # A sample repeated in the batch is compared by the mean of its losses (every copy then
        # writes the same flag: deterministic on any device).
        merged, mean_loss, copies = merge_duplicates(indices, losses.float())
        rows = merged - stats.offset
        keep = (copies > 0) & (rows >= 0) & (rows < stats.num_rows)
        rows = torch.where(keep, rows, stats.num_rows)
        self.buffers["below_local"].index_put_((rows,), mean_loss.double() < local)

    def select(self, ctx: SelectionContext) -> Selection:
        n, k = ctx.num_samples, ctx.k
        stats = ctx.stats
        below = self.buffers.get("below_local")
        low = stats.seen & (below[:-1] if below is not None else torch.zeros_like(stats.seen))
        keep = torch.ones(ctx.num_local, dtype=torch.bool, device=ctx.device)
        to_drop = n - k
        for group, purpose in ((low, "low"), (~low, "rest")):
            drop = min(to_drop, int(ctx.global_sum(group.sum())))
            if drop == 0:
                continue
            keys = ctx.uniform(f"{purpose}-drop")
            keys = torch.where(group, keys, keys + 2.0)  # shifted, not filled: see infobatch
            keep &= ~ctx.top_k(-keys, drop, f"{purpose}-ties")
            to_drop -= drop
        epochs = ctx.pruned_epochs + 1  # E, this one included
        before = ctx.selected if ctx.selected is not None else torch.zeros_like(stats.mean)
        selected = before.double() + 1  # N_i(E), if kept now
        weight = (epochs / selected).clamp(max=self.params["max_weight"]).float()
        return ctx.selection(keep, torch.where(stats.seen, weight, 1.0))
