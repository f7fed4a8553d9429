"""``peek``: dataprune's own method. Hide what is learned, peek at a share of it, step further."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..errors import InvalidValue
from ..selection import RandomStream, top_k_mask
from .base import Option, SelectionContext, stream_id
from .kakurenbo import Kakurenbo
from .registry import register


@register
class Peek(Kakurenbo):
    """Hide what is learned, peek at a share of it each epoch, and take longer steps.

    Designed from what the evidence measured (docs/METHOD.md): the methods that kept full
    accuracy hid the samples already learned (KAKURENBO) or stepped further per step, and those
    that saved time paid no extra forward pass. Each pruned epoch:

    - hides the ``N - k`` samples with the lowest latest loss among those learned with
      confidence, whose loss is at most ``-log(tau)`` (the rest, if too few qualify, uniformly
      from the others), as ``kakurenbo`` does;
    - trains at ``N / k`` times the learning rate (:meth:`dataprune.Pruner.attach`), so that the
      epoch's fewer steps travel as far as a full epoch's (``stretch=False``: the schedule's);
    - measures, at the epoch's end, a random share ``peek`` of the hidden samples (a forward
      pass without gradients, in evaluation mode), so that a hidden sample whose loss grew is
      found and trained again. KAKURENBO measures every hidden sample, which on a CPU costs as
      much as training half of them; a tenth of them costs a twentieth of an epoch at prune 0.5.

    The stretch assumes the schedule's learning rate has room to grow. Under AdamW at a rate
    already near its edge of stability (the text setting of docs/RESULTS.md), a factor of 2 or
    more hurt: there, ``stretch=False`` is the safer choice at prune 0.5 and above
    (docs/METHOD.md).

    ``steps=True`` makes up for the fewer samples another way, in place of the stretch: a pruned
    epoch takes as many optimizer steps as a full one, at the schedule's rate, on batches of
    about ``B k / N`` samples. The loader must then be built on
    :meth:`dataprune.Pruner.batch_sampler` (the framework integrations do it), and
    :meth:`dataprune.Pruner.total_steps` is full training's. It helped where few epochs meet a
    high rate (docs/METHOD.md); on a GPU a small batch costs nearly a full one's time.
    """

    name = "peek"
    options = {
        "tau": Option(
            0.7, "least probability on the true class to hide", 0.0, 1.0, flag="peek-tau"
        ),
        "peek": Option(0.1, "share of the hidden samples measured after each epoch", 0.0, 1.0),
        "stretch": Option(True, "train a pruned epoch at N / k times the learning rate"),
        "steps": Option(
            False, "keep a full epoch's step count on smaller batches, in place of the stretch"
        ),
    }

    def __init__(self, **params: Any):
        super().__init__(**params)
        if self.params["steps"] and params.get("stretch") is True:
            raise InvalidValue(
                "method='peek' with steps=True and stretch=True: both make up for a pruned "
                "epoch's fewer samples (steps=True keeps the step count at the schedule's rate); "
                "choose one, e.g. leave stretch out"
            )

    def lr_scale(self, num_samples: int, epoch_size: int) -> float:
        stretched = self.params["stretch"] and not self.params["steps"]
        return num_samples / epoch_size if stretched else 1.0

    def keeps_steps(self) -> bool:
        return self.params["steps"]

    def remeasure(self, ctx: SelectionContext, hidden: Tensor) -> Tensor:
        count = round(self.params["peek"] * hidden.numel())
        # hashed from each sample's global index: the same share on every rank, any device
        stream = RandomStream.of(ctx.seed, ctx.round, stream_id(type(self), "peek"))
        ties = RandomStream.of(ctx.seed, ctx.round, stream_id(type(self), "peek-ties"))
        return hidden[top_k_mask(stream.uniform(hidden), count, ties)]
