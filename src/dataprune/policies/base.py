"""What every selection policy shares: its options, what it may read, and what it returns.

A policy turns per-sample statistics into the kept indices (and their loss weights). ``select``
depends only on its :class:`SelectionContext`, so a run can be resumed or replayed exactly.
Scores of samples never seen are ``+inf``: a score-based rule tries unseen samples first, so none
is starved (the InfoBatch epoch-0 trap).

``weights`` are importance weights ``1 / P(kept)`` of the kept samples; the pruner applies them to
the loss when ``rescale`` is on. Samples kept with certainty (a deterministic top-k pick) get 1.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._validation import check_bool, check_choice, check_float, check_int
from ..distributed import all_reduce_sum
from ..errors import InvalidType, InvalidValue
from ..selection import RandomStream, random_mask, top_k_mask
from ..state import describe
from ..stats import SampleStats

#: Purposes whose random numbers every method shares: a uniform subset, and ties at a
#: threshold. Any other purpose gets a stream of its own (:func:`stream_id`).
SHARED_STREAMS = {"random": 1, "ties": 2}


@dataclass(frozen=True)
class Option:
    """One option of a method: its default, what it means, and the values it accepts.

    Numbers are checked against ``[low, high]`` (always finite), strings against ``choices``.
    ``flag`` is the command line's name for it (default: the option's name), and options with
    ``cli=False`` (a tensor, say) have none.
    """

    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None
    cli: bool = True

    def __post_init__(self) -> None:
        if self.default is None and self.cli:
            raise InvalidType(
                "an Option with default None has no command-line type: pass cli=False"
            )
        if self.low is not None and self.high is not None and self.low > self.high:
            raise InvalidValue(f"Option low={self.low} is above high={self.high}")
        if self.default is not None:
            self.check("default", self.default)  # the default obeys the option's own rules

    def check(self, name: str, value: Any) -> Any:
        """``value`` if it is allowed (ints of a float option become floats), else an error."""
        if self.choices is not None:
            return check_choice(name, value, self.choices)
        if isinstance(self.default, bool):
            return check_bool(name, value)
        if isinstance(self.default, int):
            low, high = (None if v is None else int(v) for v in (self.low, self.high))
            return check_int(name, value, low=low, high=high)
        if isinstance(self.default, float):
            return check_float(name, value, low=self.low, high=self.high)
        return value


@dataclass(frozen=True)
class Selection:
    """The kept samples, sorted ascending, and their importance weights (``None``: all 1)."""

    indices: Tensor
    weights: Tensor | None = None


@dataclass(frozen=True)
class SelectionContext:
    """Everything a policy may read: statistics, budget, round number (of ``rounds``) and seed.

    Random choices come from counter-based streams hashed from ``(seed, round, stream, global
    index)``, where each purpose (``"ties"``, ``"explore"``, ...) names its own stream
    (:func:`stream_id`), so a selection is a pure function of these fields. With sharded
    statistics (``Pruner(..., shard_stats=True)`` under torch.distributed) ``stats`` holds only
    the rows ``[offset, offset + num_local)`` of the ``total`` samples; a policy then works on
    those rows, uses :meth:`top_k`, :meth:`random_mask` and :meth:`global_sum` for anything
    global, and returns the kept samples among its rows (global indices); the pruner gathers
    the ranks' parts. Unsharded, ``offset`` is 0 and ``total`` None.
    """

    stats: SampleStats
    k: int
    round: int
    seed: int
    policy: type[Policy]
    offset: int = 0
    total: int | None = None  # number of samples over all shards; None: unsharded
    rounds: int = 1  # selection rounds in the run (round < rounds)
    selected: Tensor | None = None  # per row held here: the pruned epochs it was selected in
    pruned_epochs: int = 0  # pruned epochs before this selection

    @property
    def sharded(self) -> bool:
        return self.total is not None

    @property
    def num_samples(self) -> int:
        """N, the number of samples over all shards."""
        return self.num_local if self.total is None else self.total

    @property
    def num_local(self) -> int:
        """Rows of statistics this context holds (N unless sharded)."""
        return self.stats.table.shape[0]

    @property
    def device(self) -> torch.device:
        return self.stats.device

    @property
    def shard(self) -> tuple[int, int] | None:
        return None if self.total is None else (self.offset, self.total)

    def local_indices(self) -> Tensor:
        """Global indices of the rows held here."""
        return torch.arange(self.offset, self.offset + self.num_local, device=self.device)

    def stream(self, purpose: str) -> RandomStream:
        """The random stream of ``purpose`` in this round."""
        return RandomStream.of(self.seed, self.round, stream_id(self.policy, purpose))

    def uniform(self, purpose: str) -> Tensor:
        """One hashed float32 in [0, 1) per row held here."""
        return self.stream(purpose).uniform(self.local_indices())

    def top_k(self, scores: Tensor, k: int, ties: str = "ties") -> Tensor:
        """Mask of the rows among the global top k of ``scores`` (ties: the ``ties`` stream)."""
        return top_k_mask(scores, k, self.stream(ties), self.shard)

    def random_mask(self, k: int, purpose: str = "random") -> Tensor:
        """Mask of the rows among k of all N samples drawn uniformly without replacement."""
        return random_mask(self.num_local, k, self.stream(purpose), self.device, self.shard)

    def global_sum(self, value: Tensor) -> Tensor:
        """``value`` summed over the shards (itself when unsharded)."""
        return all_reduce_sum(value) if self.sharded else value

    def selection(self, mask: Tensor, weight_map: Tensor | None = None) -> Selection:
        """The :class:`Selection` of the rows in ``mask``, weighted by ``weight_map`` if given."""
        rows = mask.nonzero().squeeze(1)
        weights = None if weight_map is None else weight_map[rows]
        return Selection(rows + self.offset, weights)


def stream_id(policy: type[Policy], purpose: str) -> int:
    """The id of ``policy``'s random stream for ``purpose``.

    The shared purposes (:data:`SHARED_STREAMS`) and those a policy lists in its ``streams``
    keep fixed ids; any other is a hash of the method's name and the purpose, so a new method
    gets streams of its own without editing any table.
    """
    known = policy.streams.get(purpose, SHARED_STREAMS.get(purpose))
    if known is not None:
        return known
    digest = hashlib.sha256(f"{policy.name}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def unseen_first(scores: Tensor, stats: SampleStats) -> Tensor:
    """``scores`` with ``+inf`` for the samples never seen, so that they are tried first."""
    return torch.where(stats.seen, scores, math.inf)


class Policy:
    """A selection rule: subclass it, fill in the class attributes and ``select``, register it.

    Adding a method takes one file::

        import dataprune
        from dataprune.policies import Option, Policy, Selection, SelectionContext, register
        from dataprune.policies import unseen_first

        @register
        class LowestLoss(Policy):
            \"\"\"Keep the k samples with the lowest EMA loss (unseen ones first).\"\"\"

            name = "lowest-loss"
            options = {"margin": Option(0.0, "added to every loss", low=0.0)}

            def select(self, ctx: SelectionContext) -> Selection:
                scores = -(ctx.stats.mean + self.params["margin"])
                return ctx.selection(ctx.top_k(unseen_first(scores, ctx.stats), ctx.k))

        dataprune.Pruner(50_000, method="lowest-loss", prune=0.5, epochs=10, margin=0.1)

    Once the file is imported the method is in ``dataprune.methods()``, in the harness
    (``dataprune compare --methods lowest-loss --margin 0.1``) and in the evidence benchmark.
    A package registers its methods for the command line through the ``dataprune.methods``
    entry-point group (see :func:`dataprune.policies.registry.load_entry_points`).

    Class attributes:
        name: the method's name.
        options: the method's own options (``Option`` per name); their values are in
            ``self.params``, checked when the policy is built.
        reselects: False if one subset serves the whole run (chosen in the first pruned epoch).
        prunes: False if the method never leaves a sample out of an epoch (``full``).
        selects_in_batch: True if the method forwards every batch without gradients first and
            back-propagates only the rows :meth:`batch_rows` picks (``prune`` is then the share
            of each batch not back-propagated); :meth:`dataprune.Pruner.loss` does both passes.
        default_alpha: the EMA step size of the loss statistics the method expects.
        default_rescale: whether kept losses are weighted by ``1 / P(kept)`` by default.
        anneal_fraction: the share of final epochs trained on full data by default.
        streams: fixed ids of this method's random streams by purpose, kept so that its
            selections stay what they were; a purpose not listed gets a stream of its own
            (:func:`stream_id`), so a new method lists none.

    Hooks, all no-ops but :meth:`select`; the :class:`dataprune.Pruner` calls them, so a loop
    is the same for every method: :meth:`observe`, :meth:`batch_rows`, :meth:`lr_scale`,
    :meth:`keeps_steps`, :meth:`remeasure`. A method that keeps more than the loss statistics
    keeps it in :attr:`buffers`, which the Pruner saves, restores, moves and shards with them.
    """

    name: ClassVar[str]
    options: ClassVar[dict[str, Option]] = {}
    reselects: ClassVar[bool] = True
    prunes: ClassVar[bool] = True
    selects_in_batch: ClassVar[bool] = False
    default_alpha: ClassVar[float] = 0.8
    default_rescale: ClassVar[bool] = False
    anneal_fraction: ClassVar[float] = 0.0
    streams: ClassVar[dict[str, int]] = {}

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise InvalidType(
                f"unknown option {unknown[0]!r} for method={self.name!r}; valid options: {valid}"
            )
        self.params = {
            name: option.check(name, params[name]) if name in params else option.default
            for name, option in self.options.items()
        }
        #: Tensors the method keeps beside the statistics: 1-D with one entry per statistics
        #: row and a spare last one, where writes for other shards' samples can go without a
        #: host sync (the Pruner shards these like the statistics), or 0-D (kept whole).
        self.buffers: dict[str, Tensor] = {}

    @classmethod
    def default_anneal_epochs(cls, epochs: int, warmup_epochs: int = 0) -> int:
        """Full-data epochs at the end by default: ``max(1, round(anneal_fraction * epochs))``
        when the fraction is positive, always leaving at least one pruned epoch."""
        if cls.anneal_fraction <= 0:
            return 0
        wanted = max(1, round(cls.anneal_fraction * epochs))
        return max(0, min(wanted, epochs - warmup_epochs - 1))

    @classmethod
    def unused_parameters(cls) -> dict[str, str]:
        """The :class:`dataprune.Pruner` parameters this method ignores, each with the reason
        (the command line refuses them rather than ignore them)."""
        unused: dict[str, str] = {}
        if not cls.prunes:
            reason = "it trains on every sample"
            if cls.selects_in_batch:
                reason = "it forwards every sample and thins each batch by prune"
            names = ["prune_schedule", "prune_end", "warmup_epochs", "anneal_epochs"]
            names += ["rescale", "alpha"]
            if not cls.selects_in_batch:
                names.append("prune")
            unused |= dict.fromkeys(names, reason)
        if not (cls.prunes and cls.reselects):
            unused["every"] = "it never selects again"
        return unused

    def check_num_samples(self, num_samples: int) -> None:
        """Refuse options that do not fit a dataset of ``num_samples`` (nothing by default)."""

    def state(self) -> dict[str, Any]:
        """The options as plain values, saved in the pruner's state and compared on load.

        Tensors are saved as the sha256 of their bytes: the state stays small, and a state
        saved with other scores is still refused.
        """
        return {
            name: _digest(value) if isinstance(value, Tensor) else value
            for name, value in self.params.items()
        }

    def select(self, ctx: SelectionContext) -> Selection:
        """The samples to keep for the round ``ctx.round`` (exactly ``ctx.k`` of them)."""
        raise NotImplementedError(f"{type(self).__name__} must define select()")

    # ------------------------------------------------------------------- hooks
    def observe(self, stats: SampleStats, indices: Tensor, losses: Tensor) -> None:
        """Sees every batch folded into ``stats``: its global ``indices`` (of every rank) and
        float32 ``losses``, NaN where a sample has no loss. Nothing by default; no host sync."""

    def batch_rows(self, losses: Tensor, prune: float) -> Tensor:
        """For a method that ``selects_in_batch``: the ascending positions of the rows to
        back-propagate, from the batch's losses (NaN for a row without one)."""
        raise NotImplementedError(f"{type(self).__name__} does not select within a batch")

    def lr_scale(self, num_samples: int, epoch_size: int) -> float:
        """The factor on the learning rate of a pruned epoch that trains ``epoch_size`` of
        ``num_samples`` samples (1: the schedule's rate), applied to the optimizers attached
        with :meth:`dataprune.Pruner.attach`."""
        return 1.0

    def keeps_steps(self) -> bool:
        """Whether a pruned epoch takes as many optimizer steps as a full epoch, on batches
        made smaller in proportion (:meth:`dataprune.Pruner.batch_sampler`); False: it takes
        ``k / N`` of them, on batches of the loop's size."""
        return False

    def remeasure(self, ctx: SelectionContext, hidden: Tensor) -> Tensor:
        """The samples, among the ``hidden`` ones an epoch left out, whose losses are to be
        measured (a forward pass without gradients) when it ends; none by default."""
        return hidden[:0]


def _digest(tensor: Tensor) -> str:
    data = tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def check_selection(selection: Any, method: str, start: int, end: int) -> None:
    """Refuse what a policy's ``select`` returned unless it is a sorted set of its rows."""
    problem = None
    if not isinstance(selection, Selection):
        problem = f"returned {describe(selection)}, not a Selection"
    else:
        indices, weights = selection.indices, selection.weights
        if not isinstance(indices, Tensor) or indices.dim() != 1 or indices.is_floating_point():
            problem = f"returned indices {describe(indices)}, not a 1-D integer tensor"
        elif indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
            problem = "returned indices that are not sorted without repeats"
        elif indices.numel() and (int(indices[0]) < start or int(indices[-1]) >= end):
            problem = f"returned indices outside its samples [{start}, {end})"
        elif weights is not None and (
            not isinstance(weights, Tensor)
            or weights.shape != indices.shape
            or not bool((torch.isfinite(weights) & (weights > 0)).all())
        ):
            problem = "returned weights that are not one finite positive number per index"
    if problem:
        raise RuntimeError(f"method={method!r}: Policy.select() {problem}")
