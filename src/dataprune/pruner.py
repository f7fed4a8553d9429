"""The Pruner: decides each epoch's subset and learns from the losses the loop already computes."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from . import state
from ._validation import check_bool, check_device, check_float, check_int
from .distributed import (
    all_gather_indices,
    all_gather_varlen,
    all_reduce_sum,
    host_group,
    world,
)
from .errors import InvalidValue
from .policies import DEFAULT_METHOD, DEFAULT_PRUNE, SelectionContext, get_policy
from .policies.base import check_selection
from .recording import Recording
from .sampler import PrunedBatchSampler, PrunedSampler, batch_count
from .schedule import PruneSchedule, budget, check_schedule, epoch_budgets
from .state import Counters, Progress
from .stats import MAX_SAMPLES, SampleStats

logger = logging.getLogger("dataprune")

#: An upper bound on ``epochs`` (and ``every``), far past any real run.
MAX_EPOCHS = 1_000_000


class Pruner(Recording):
    """Dynamic data pruning for any PyTorch training loop.

    Args:
        num_samples: size N of the training set.
        method: one of ``dataprune.methods()``; by default the method the evidence recommends.
        prune: fraction of the dataset left out of each pruned epoch, ``0 <= prune < 1`` (the
            first pruned epoch's under a ``prune_schedule``). The per-epoch budget is
            ``k = max(1, round((1 - prune) * N))``.
        epochs: the number of epochs the run will train.
        prune_schedule: how the rate moves over the pruned epochs: ``"constant"`` (``prune``
            throughout), ``"linear"`` or ``"cosine"`` from ``prune`` at the first pruned epoch
            to ``prune_end`` at the last, or a callable ``epoch -> prune`` (deterministic, the
            same on every rank). With ``every > 1`` each selection's epochs share the rate of
            its first epoch. Every epoch's budget is fixed when the Pruner is built:
            :meth:`epoch_size`, :meth:`total_steps` and the sampler's length agree with it.
        prune_end: the rate of the last pruned epoch, for ``"linear"`` and ``"cosine"``.
        seed: seeds every random choice; selection at epoch e depends only on the seed, e and
            the statistics, so identical ranks and resumed runs choose identically.
        every: re-select every ``every`` pruned epochs (reuse the subset in between).
        warmup_epochs: full-data epochs at the start.
        anneal_epochs: full-data epochs at the end. Default: the method's
            (``Policy.default_anneal_epochs``; for ``infobatch`` the last 12.5%, at least one).
        rescale: weight each kept sample's loss by ``1 / P(kept)``. Default: the method's
            (on for ``infobatch``, off otherwise).
        alpha: EMA step size of the loss statistics (``mean += alpha * (loss - mean)``).
            Default: the method's (1.0, the latest loss, for ``infobatch``; 0.8 otherwise).
        device: where the statistics live; they move to the losses' device on ``record``.
        shard_stats: under torch.distributed with W ranks, rank r keeps only the statistics of
            its contiguous shard ``[r N // W, (r + 1) N // W)`` (memory O(N / W) per rank).
            ``record`` still gathers every rank's batch; selection computes scores on each
            shard, finds the global threshold with an exact distributed radix select and
            gathers the kept indices, so every rank gets the same subset, identical to the one
            unsharded statistics give. Decided when the Pruner is built (build it after
            ``init_process_group``); without torch.distributed it changes nothing.
        compile: fold losses into the statistics through ``torch.compile`` (off the CPU's fast
            path): fewer, fused kernels per ``record`` on an accelerator, after a compile on
            first use. Statistics match the eager path to float rounding, not bit for bit.
        **options: the method's own options (``Policy.options``), e.g. ``epsilon`` for
            ``epsilon-greedy``, ``c`` and ``bonus`` for ``ucb``, ``scores`` for ``static-score``.

    A loop is the same for every method: :meth:`set_epoch`, then :meth:`loss` for each batch,
    then :meth:`end_epoch`. A method's own steps run inside them.
    """

    def __init__(
        self,
        num_samples: int,
        method: str = DEFAULT_METHOD,
        prune: float = DEFAULT_PRUNE,
        epochs: int = 1,
        seed: int = 0,
        *,
        prune_schedule: PruneSchedule = "constant",
        prune_end: float | None = None,
        every: int = 1,
        warmup_epochs: int = 0,
        anneal_epochs: int | None = None,
        rescale: bool | None = None,
        alpha: float | None = None,
        device: torch.device | str = "cpu",
        shard_stats: bool = False,
        compile: bool = False,
        **options: Any,
    ):
        self.num_samples = check_int("num_samples", num_samples, low=1, high=MAX_SAMPLES)
        policy_class = get_policy(method)
        self.method = method
        self.prune = check_float("prune", prune, low=0.0, high=1.0, high_open=True)
        self.epochs = check_int("epochs", epochs, low=1, high=MAX_EPOCHS)
        self.seed = check_int("seed", seed, low=-(2**63), high=2**63 - 1)
        self.every = check_int("every", every, low=1, high=MAX_EPOCHS)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, low=0, high=self.epochs)
        if anneal_epochs is None:
            anneal_epochs = policy_class.default_anneal_epochs(self.epochs, self.warmup_epochs)
        self.anneal_epochs = check_int(
            "anneal_epochs", anneal_epochs, low=0, high=self.epochs - self.warmup_epochs
        )
        self.rescale = policy_class.default_rescale if rescale is None else rescale
        check_bool("rescale", self.rescale)
        check_bool("shard_stats", shard_stats)
        check_bool("compile", compile)
        alpha = policy_class.default_alpha if alpha is None else alpha
        self.alpha = check_float("alpha", alpha, low=0.0, high=1.0, low_open=True)
        check_schedule(prune_schedule, self.prune, prune_end)
        #: the schedule's name, or "callable" (its rates are in ``budgets``)
        self.prune_schedule = "callable" if callable(prune_schedule) else prune_schedule
        self.prune_end = prune_end
        #: the budget of a pruned epoch at ``prune`` (the first pruned epoch's, if scheduled)
        self.k = budget(num_samples, self.prune)
        device = check_device(device)
        asks_to_prune = (
            callable(prune_schedule)
            or self.k < num_samples
            or (prune_end is not None and budget(num_samples, prune_end) < num_samples)
        )
        if (
            policy_class.prunes
            and asks_to_prune
            and self.warmup_epochs + self.anneal_epochs >= self.epochs
        ):
            raise InvalidValue(
                f"warmup_epochs={self.warmup_epochs} + anneal_epochs={self.anneal_epochs} leave "
                f"none of the {self.epochs} epochs pruned: method={method!r} would train on "
                "full data throughout; lower them, or use method='full'"
            )
        window = range(self.warmup_epochs, self.epochs - self.anneal_epochs)
        #: selection rounds of the run: one per ``every`` pruned epochs (one if never again)
        self.rounds = max(1, math.ceil(len(window) / self.every)) if policy_class.reselects else 1
        #: every epoch's budget: N for the epochs that train on all samples
        self.budgets = epoch_budgets(
            num_samples,
            self.epochs,
            list(window) if policy_class.prunes else [],
            prune_schedule,
            self.prune,
            prune_end,
            self._round_start if policy_class.reselects else (lambda epoch: epoch),
        )

        self.policy = policy_class(**options)
        self.policy.check_num_samples(num_samples)
        rank, world_size = world()
        if world_size > 1:
            host_group()  # a collective: made here, on every rank, not inside the first record
        self.shard: tuple[int, int] | None = None  # [start, end) of the rows held here
        if shard_stats and world_size > 1:
            self.shard = (rank * num_samples // world_size, (rank + 1) * num_samples // world_size)
        start, end = self.shard or (0, num_samples)
        self.stats = SampleStats(
            end - start,
            self.alpha,
            device,
            offset=start,
            total=num_samples if self.shard else None,
            compile=compile,
        )
        # selected_count covers the same rows as the statistics
        self.selected_count = torch.zeros(self.stats.num_rows, dtype=torch.int32, device=device)
        self.progress = Progress()
        self.counters = Counters()
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=device)  # no host sync
        self.last_selection_seconds = 0.0  # of the latest set_epoch
        self._validated_epoch: int | None = -1  # the epoch whose indices were range-checked
        self._nonfinite_reported = 0  # the count when NaN/inf losses were last logged
        self._reported_epoch: int | None = -1  # the epoch they were last logged in
        self._recorded_in_epoch = 0  # record() calls in the current epoch
        self._ended_epoch: int | None = None  # the epoch end_epoch last finished
        self._warned_epoch: int | None = None  # the epoch last warned to have recorded nothing
        self._attached: list[torch.optim.Optimizer] = []  # optimizers whose rate it scales
        self._warned_unattached = False
        self._warned_steps = False  # a loader of fixed batch size under a method keeping steps
        self._warned_unreadable = False

    # ----------------------------------------------------------------- schedule
    @property
    def epoch(self) -> int | None:
        """The current epoch (set by :meth:`set_epoch`), None before the first."""
        return self.progress.epoch

    def _round_start(self, epoch: int) -> int:
        """The first epoch of the selection round ``epoch`` belongs to."""
        return epoch - (epoch - self.warmup_epochs) % self.every

    def is_pruned_epoch(self, epoch: int) -> bool:
        """Whether ``epoch`` trains on a subset (not warm-up, anneal, ``full`` or a rate of 0)."""
        return self.budgets[epoch] < self.num_samples

    def epoch_size(self, epoch: int) -> int:
        """Number of samples trained on in ``epoch`` (over all ranks)."""
        return self.budgets[epoch]

    def total_steps(self, batch_size: int, drop_last: bool = False, accumulate: int = 1) -> int:
        """Optimizer steps of the whole run on one rank, to size LR schedules ahead.

        ``accumulate`` batches make one step, and an epoch's last, shorter window steps too
        (as Lightning and the Hugging Face Trainer do).
        """
        return sum(
            self.epoch_steps(e, batch_size, drop_last, accumulate) for e in range(self.epochs)
        )

    def epoch_steps(
        self, epoch: int, batch_size: int, drop_last: bool = False, accumulate: int = 1
    ) -> int:
        """Optimizer steps of ``epoch`` on one rank (see :meth:`total_steps`)."""
        check_int("accumulate", accumulate, low=1)
        return math.ceil(self.epoch_batches(epoch, batch_size, drop_last) / accumulate)

    def epoch_batches(self, epoch: int, batch_size: int, drop_last: bool = False) -> int:
        """Batches of ``epoch`` on one rank, as :meth:`batch_sampler` cuts it (for a method
        that does not keep steps, as :meth:`sampler` with ``DataLoader(batch_size=...)`` does)."""
        check_int("batch_size", batch_size, low=1)
        return batch_count(
            self.epoch_size(epoch),
            self.num_samples if self.keeps_steps(epoch) else None,
            batch_size,
            world()[1],
            drop_last,
        )

    def keeps_steps(self, epoch: int) -> bool:
        """Whether ``epoch`` takes a full epoch's step count on smaller batches (a pruned epoch
        of a method that keeps steps, e.g. ``peek`` with ``steps=True``)."""
        return self.is_pruned_epoch(epoch) and self.policy.keeps_steps()

    # ---------------------------------------------------------------- selection
    def set_epoch(self, epoch: int) -> None:
        """Decide the subset for ``epoch``.

        Epochs run forward: calling it again for the current epoch changes nothing, a later
        epoch may skip some (the skipped ones count as not trained in :meth:`summary`), and an
        earlier one is refused, since the statistics already hold the later epochs' losses.
        """
        check_int("epoch", epoch, low=0, high=self.epochs - 1)
        progress = self.progress
        if epoch == progress.epoch:
            return
        if progress.epoch is not None and epoch < progress.epoch:
            raise InvalidValue(
                f"set_epoch({epoch}) after epoch {progress.epoch}: epochs run forward, and the "
                f"statistics already hold the losses of epoch {progress.epoch}. To train epoch "
                f"{epoch} again, build a new Pruner or load a state_dict saved before it"
            )
        self._report_nonfinite(epoch_ended=True)
        self._warn_if_nothing_recorded()
        progress.epoch = epoch
        self._recorded_in_epoch = 0
        self.counters.epochs_started += 1
        started = time.perf_counter()
        if not self.is_pruned_epoch(epoch):
            self._use_subset(None, None)
        else:
            rnd = (epoch - self.warmup_epochs) // self.every if self.policy.reselects else 0
            k = self.budgets[epoch]
            # A method that selects once selects again (in the same round) when the budget moves.
            if rnd != progress.round or progress.subset is None or progress.subset.numel() != k:
                self._select(rnd, k)
        if self.is_pruned_epoch(epoch):
            self._count_selected()
            self.counters.pruned_epochs += 1
        self.counters.samples_used += self.epoch_size(epoch)
        self.last_selection_seconds = time.perf_counter() - started
        self.counters.selection_seconds += self.last_selection_seconds

    def _context(self, rnd: int, k: int) -> SelectionContext:
        return SelectionContext(
            stats=self.stats,
            k=k,
            round=rnd,
            seed=self.seed,
            policy=type(self.policy),
            offset=self.stats.offset,
            total=None if self.shard is None else self.num_samples,
            rounds=self.rounds,
            selected=self.selected_count,
            pruned_epochs=self.counters.pruned_epochs,
        )

    def _select(self, rnd: int, k: int) -> None:
        selection = self.policy.select(self._context(rnd, k))
        start, end = self.shard or (0, self.num_samples)
        check_selection(selection, self.method, start, end)
        indices, weights = selection.indices, selection.weights
        stayed = None
        if self.shard is not None:
            stayed = self._stayed_in_shard(indices, self.shard)
            indices = all_gather_indices(indices, start, end - start)
            if weights is not None:
                weights = all_gather_varlen(weights) if self.rescale else None
        if indices.numel() != k:
            raise RuntimeError(
                f"method={self.method!r} selected {indices.numel()} samples, not the "
                f"budget k={k}: its Policy.select() must return exactly ctx.k"
            )
        self.progress.round = rnd
        self._use_subset(indices, weights, stayed)

    def _count_selected(self) -> None:
        if self.shard is None:
            self.selected_count[self.indices()] += 1
        else:
            self.selected_count[_within(self.indices(), self.shard) - self.shard[0]] += 1

    def _stayed_in_shard(self, local: Tensor, shard: tuple[int, int]) -> int | None:
        """How many of this shard's newly selected samples were selected before (all ranks)."""
        previous = self.progress.subset
        if previous is None:
            return None
        start, end = shard
        before = torch.zeros(end - start, dtype=torch.bool, device=local.device)
        before[_within(previous, shard) - start] = True
        return int(all_reduce_sum(before[local - start].sum()))

    def _use_subset(
        self, indices: Tensor | None, weights: Tensor | None, stayed: int | None = None
    ) -> None:
        progress = self.progress
        if indices is not None and progress.subset is not None:
            if stayed is None:
                kept = torch.zeros(self.num_samples, dtype=torch.bool, device=self.stats.device)
                kept[progress.subset] = True
                stayed = int(kept[indices].sum())
            entered, left = indices.numel() - stayed, progress.subset.numel() - stayed
            epoch = int(progress.epoch)  # type: ignore[arg-type]  # set before any selection
            progress.churn.append({"epoch": epoch, "entered": entered, "left": left})
        progress.subset = indices
        if not self.rescale:
            return
        if progress.weights is None:
            progress.weights = torch.ones(self.num_samples, device=self.stats.device)
        progress.weights.fill_(1.0)
        if indices is not None and weights is not None:
            progress.weights[indices] = weights.to(progress.weights.dtype)

    def indices(self) -> Tensor:
        """This epoch's subset as a sorted LongTensor on the statistics' device."""
        if self.progress.epoch is None:
            raise RuntimeError("no subset yet: call pruner.set_epoch(epoch) first")
        if self.progress.subset is None:
            return torch.arange(self.num_samples, device=self.stats.device)
        return self.progress.subset

    def sampler(
        self,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> PrunedSampler:
        """A ``torch.utils.data.Sampler`` over the current subset (this rank's equal share).

        ``num_replicas=1`` yields the whole subset on every rank, for loaders that Accelerate
        shards by batches (see ``dataprune.frameworks.accelerate``).
        """
        return PrunedSampler(
            self, shuffle=shuffle, drop_last=drop_last, num_replicas=num_replicas, rank=rank
        )

    def batch_sampler(
        self,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> PrunedBatchSampler:
        """A batch sampler over the current subset: ``DataLoader(dataset,
        batch_sampler=pruner.batch_sampler(batch_size))``.

        Batches of ``batch_size``, as :meth:`sampler` with ``DataLoader(batch_size=...)`` gives
        them, but for a method that keeps steps (``peek`` with ``steps=True``), whose pruned
        epochs take as many batches as a full epoch's, of sizes that differ by at most one.
        Every method runs on it; those that keep steps need it.
        """
        return PrunedBatchSampler(
            self.sampler(
                shuffle=shuffle, drop_last=drop_last, num_replicas=num_replicas, rank=rank
            ),
            batch_size,
        )

    # ----------------------------------------------------------------- reports
    def summary(self) -> dict[str, Any]:
        """Samples used so far, realised fraction pruned, compute and time in the machinery.

        ``fraction_pruned`` is ``1 - samples_used / (N * epochs_started)``, over the epochs
        started with ``set_epoch`` (epochs skipped over are not counted as trained).
        ``samples_used`` is what the selection planned (``epoch_size`` of each epoch started).
        ``samples_forwarded`` counts this process's samples through any forward pass (training,
        a method's passes without gradients), ``samples_backpropagated`` those whose loss it
        returned to train on: the compute, where a sequential reader gives ranks unequal shares
        (see ``dataprune.formats.webdataset``) the realised budget. ``record_seconds`` is host
        time: on CUDA, record() only queues kernels.
        """
        self._report_nonfinite()
        counters = self.counters
        full = self.num_samples * counters.epochs_started
        return {
            "method": self.method,
            "epochs_started": counters.epochs_started,
            "samples_used": counters.samples_used,
            "fraction_pruned": 1 - counters.samples_used / full if full else 0.0,
            "samples_forwarded": counters.samples_forwarded,
            "samples_backpropagated": counters.samples_backpropagated,
            "selection_seconds": counters.selection_seconds,
            "record_seconds": counters.record_seconds,
            "record_calls": counters.record_calls,
            "nonfinite_losses_skipped": int(self.nonfinite),
        }

    def epoch_metrics(self) -> dict[str, float]:
        """The current epoch's pruning figures, for a logger (one host sync).

        ``fraction_pruned`` and ``samples_used`` of this epoch, ``selection_seconds`` spent
        choosing its subset, and in a pruned epoch the mean loss statistic (the EMA) of the kept
        and of the dropped samples among those seen so far. A collective under ``shard_stats``.
        """
        epoch = self.progress.epoch
        if epoch is None:
            raise RuntimeError("no epoch yet: call pruner.set_epoch(epoch) first")
        size = self.epoch_size(epoch)
        metrics = {
            "fraction_pruned": 1 - size / self.num_samples,
            "samples_used": float(size),
            "selection_seconds": self.last_selection_seconds,
        }
        if self.progress.subset is None:
            return metrics
        kept = torch.zeros(self.stats.num_rows, dtype=torch.bool, device=self.stats.device)
        subset = self.progress.subset
        rows = subset if self.shard is None else _within(subset, self.shard)
        kept[rows - (0 if self.shard is None else self.shard[0])] = True
        seen = self.stats.seen
        groups = torch.stack([kept & seen, ~kept & seen]).double()  # (kept, dropped) x samples
        sums = torch.cat([groups @ self.stats.mean.double(), groups.sum(dim=1)])
        if self.shard is not None:
            sums = all_reduce_sum(sums)
        kept_sum, dropped_sum, kept_seen, dropped_seen = sums.tolist()
        if kept_seen:
            metrics["kept_mean_loss"] = kept_sum / kept_seen
        if dropped_seen:
            metrics["dropped_mean_loss"] = dropped_sum / dropped_seen
        return metrics

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Statistics, subset, counters and settings; loadable with ``weights_only=True``
        (the schema: :mod:`dataprune.state`).

        Random choices are counter-based (hashed from ``seed``, the round and sample indices),
        so no RNG state is needed: a resumed run selects exactly what an uninterrupted one
        would have. With sharded statistics each rank's state holds only its shard's rows of
        ``stats`` and ``selected_count``; :meth:`gathered_state_dict` gives the whole state.
        """
        return state.save(self, self.stats.table, self.selected_count, self.policy.buffers)

    def gathered_state_dict(self) -> dict[str, Any]:
        """The whole state, on every rank, as an unsharded pruner would save it.

        A collective call under sharded statistics (every rank must call it): the shards'
        statistics and counts are all-gathered, so each rank briefly holds all N rows. Loads
        into sharded and unsharded pruners alike (a sharded one keeps its own rows).
        """
        if self.shard is None:
            return self.state_dict()
        per_row = self.stats.num_rows + 1  # with the spare entry, which travels once
        buffers = {
            name: torch.cat([all_gather_varlen(value[:-1]), value[-1:]])
            if value.dim() == 1 and value.numel() == per_row
            else value
            for name, value in self.policy.buffers.items()
        }
        saved = state.save(
            self,
            all_gather_varlen(self.stats.table.flatten()).view(-1, 3),
            all_gather_varlen(self.selected_count),
            buffers,
        )
        saved["shard"] = None
        return saved

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict`` from a pruner of the same configuration.

        Refuses, with the reason, a state saved with other settings or method options, or one
        that does not fit this pruner (wrong sizes, indices out of range). A sharded pruner
        loads either its own shard's state or a whole one (from :meth:`gathered_state_dict` or
        an unsharded pruner), keeping its rows of the latter. Rows that are not valid statistics
        (not finite, a negative variance or count: no version of dataprune writes them) load as
        unseen samples.
        """
        rows = state.check(self, saved)
        state.load(self, saved, rows)
        self._nonfinite_reported = int(self.nonfinite)
        self._recorded_in_epoch = 1  # a saved epoch is one that trained
        self._ended_epoch = None


def _within(subset: Tensor, shard: tuple[int, int]) -> Tensor:
    """The entries of the sorted ``subset`` that lie in the shard ``[start, end)``."""
    bounds = torch.tensor(shard, device=subset.device)
    lo, hi = torch.searchsorted(subset, bounds).tolist()
    return subset[lo:hi]
