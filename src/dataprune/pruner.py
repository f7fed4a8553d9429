"""The Pruner: decides each epoch's subset and learns from the losses the loop already computes."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from . import loop, state
from ._validation import check_bool, check_float, check_int
from .distributed import (
    all_gather_indices,
    all_gather_varlen,
    all_reduce_sum,
    gather_batch,
    host_group,
    world,
)
from .errors import InvalidValue
from .policies import DEFAULT_METHOD, DEFAULT_PRUNE, Selection, SelectionContext, get_policy
from .sampler import PrunedSampler, shard
from .schedule import PruneSchedule, budget, check_schedule, epoch_budgets
from .state import Counters, Progress
from .stats import MAX_SAMPLES, SampleStats

logger = logging.getLogger("dataprune")

#: An upper bound on ``epochs`` (and ``every``), far past any real run.
MAX_EPOCHS = 1_000_000


class Pruner:
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
        device = _check_device(device)
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
        check_int("batch_size", batch_size, low=1)
        check_int("accumulate", accumulate, low=1)
        n, world_size = self.epoch_size(epoch), world()[1]
        per_rank = n // world_size if drop_last else math.ceil(n / world_size)
        batches = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
        return math.ceil(batches / accumulate)

    def uniform_epochs(self) -> bool:
        """Whether every epoch trains the same number of samples (no warm-up or anneal)."""
        return len(set(self.budgets)) == 1

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
        )

    def _select(self, rnd: int, k: int) -> None:
        selection = self.policy.select(self._context(rnd, k))
        start, end = self.shard or (0, self.num_samples)
        _check_selection(selection, self.method, start, end)
        indices, weights = selection.indices, selection.weights
        stayed = None
        if self.shard is not None:
            stayed = self._stayed_in_shard(indices)
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
            self.selected_count[self._shard_of_subset() - self.shard[0]] += 1

    def _shard_of_subset(self) -> Tensor:
        """The current subset's indices within this rank's shard (the subset is sorted)."""
        start, end = self.shard
        subset = self.progress.subset
        bounds = torch.tensor([start, end], device=subset.device)
        lo, hi = torch.searchsorted(subset, bounds).tolist()
        return subset[lo:hi]

    def _stayed_in_shard(self, local: Tensor) -> int | None:
        """How many of this shard's newly selected samples were selected before (all ranks)."""
        if self.progress.subset is None:
            return None
        start, end = self.shard
        before = torch.zeros(end - start, dtype=torch.bool, device=local.device)
        before[self._shard_of_subset() - start] = True
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
            progress.churn.append({"epoch": progress.epoch, "entered": entered, "left": left})
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

    # ------------------------------------------------------------ the loop's steps
    def loss(self, indices: Tensor, batch: Any, sample_losses: loop.SampleLosses) -> Tensor:
        """Train on one batch: the loss to back-propagate, with the batch's losses recorded.

        ``sample_losses(batch)`` computes one loss per sample (``reduction="none"``; or
        ``(losses, valid)``, see :func:`dataprune.sequence_losses`) with the model as it
        trains. Most methods call it once and return :meth:`record`'s loss. A method that
        selects within a batch (``selective-backprop``) calls it first without gradients on
        the whole batch, records those losses, then calls it with gradients on the rows it
        keeps (:func:`dataprune.loop.take_rows` cuts every tensor of the batch) and returns
        their mean.
        """
        if not self.policy.selects_in_batch:
            return self.record(indices, *loop.split_losses(sample_losses(batch)))
        with torch.no_grad():
            losses, valid = loop.split_losses(sample_losses(batch))
        self._fold(indices, losses, valid)
        rows = self.policy.batch_rows(loop.nan_where_invalid(losses, valid), self.prune)
        kept, kept_valid = loop.split_losses(
            sample_losses(loop.take_rows(batch, rows, indices.numel()))
        )
        self.counters.samples_forwarded += rows.numel()
        self.counters.samples_backpropagated += rows.numel()
        if kept_valid is not None:
            kept_valid = kept_valid & (kept.detach().float().abs() < math.inf)
        return self._scaled(loop.masked_mean(kept, kept_valid))

    def record(self, indices: Tensor, losses: Tensor, valid: Tensor | None = None) -> Tensor:
        """Store per-sample losses; return their (weighted) mean, ready for ``.backward()``.

        ``losses`` must hold one loss per sample (``reduction='none'``). ``valid``, a bool
        tensor of the same shape, marks samples that have no loss (a sequence whose tokens are
        all padding, see :func:`dataprune.sequence_losses`): they leave the statistics and the
        mean untouched and are not counted as non-finite. NaN and inf losses are left out of
        the statistics and of the mean, and logged (logger ``"dataprune"``) at most once an
        epoch; ``summary()["nonfinite_losses_skipped"]`` counts them. They still reach the
        gradients: the gradient of an inf loss such as ``-log(0)`` is NaN whatever this
        returns, so a run that produces them is diverging. Under torch.distributed every rank
        gathers all ranks' indices (int64) and losses (float32), so statistics stay identical.
        A sample repeated within one call is updated once, with the mean of its finite losses.

        The mean is multiplied by the method's loss scale (``kakurenbo``'s ``1 / (1 - F)``; 1
        for the others). :meth:`loss` calls it; call it yourself where the loop computes the
        losses itself, for every method that does not select within a batch.
        """
        if self.policy.selects_in_batch:
            raise InvalidValue(
                f"method={self.method!r} selects the rows to train within each batch, after a "
                "forward pass without gradients: use pruner.loss(indices, batch, sample_losses)"
            )
        counted = self._fold(indices, losses, valid)
        weights = self.progress.weights
        total = losses if counted is None else torch.where(counted, losses, 0.0)
        if weights is not None:
            total = total * weights.index_select(0, indices.to(weights.device)).to(total.dtype)
        count = losses.numel() if counted is None else counted.sum().clamp_min(1)
        self.counters.samples_backpropagated += losses.numel()
        return self._scaled(total.sum() / count)

    def end_epoch(
        self,
        model: nn.Module,
        data: DataLoader | Callable[[Tensor], Any],
        sample_losses: loop.SampleLosses,
        batch_size: int | None = None,
    ) -> None:
        """Finish the current epoch: the method's own step after training, if it has one.

        Call it once an epoch's batches are done (before evaluating or saving a checkpoint).
        Most methods do nothing here. ``kakurenbo`` measures the samples it left out: it reads
        them as ``data`` does (the training DataLoader, or a function from a tensor of indices
        to their batch, with ``batch_size``), moves each batch to the device the losses came
        from, and records ``sample_losses(batch)`` with ``model`` in evaluation mode and no
        gradients (no BatchNorm statistic changes); each rank takes an equal share.
        """
        epoch = self.progress.epoch
        if epoch is None:
            raise RuntimeError("end_epoch() before any epoch: call pruner.set_epoch(epoch) first")
        self._warn_if_nothing_recorded()
        if self._ended_epoch == epoch or not self.is_pruned_epoch(epoch):
            return
        self._ended_epoch = epoch
        hidden = torch.ones(self.num_samples, dtype=torch.bool, device=self.stats.device)
        hidden[self.progress.subset] = False
        context = self._context(self.progress.round or 0, self.epoch_size(epoch))
        todo = self.policy.remeasure(context, hidden.nonzero().squeeze(1))
        if todo.numel() == 0:
            return
        rank, world_size = world()
        mine = shard(todo.cpu(), rank, world_size, drop_last=False)
        # Equal shares keep every rank at the same number of (collective) folds; the copies
        # that pad a share count as having no loss, so every sample is measured once.
        padding = rank + world_size * torch.arange(mine.numel()) >= todo.numel()
        done = 0
        with loop.evaluation_mode(model):
            for index, batch in loop.batches_of(data, mine, batch_size):
                losses, valid = loop.split_losses(
                    sample_losses(loop.to_device(batch, self.stats.device))
                )
                real = ~padding[done : done + index.numel()].to(losses.device)
                self._fold(index, losses, real if valid is None else valid & real)
                done += index.numel()

    def _fold(self, indices: Tensor, losses: Tensor, valid: Tensor | None) -> Tensor | None:
        """Fold a batch into the statistics; the mask of the losses that count (finite and
        valid), or None when every one does."""
        start = time.perf_counter()
        loop.check_batch(indices, losses, valid)
        indices = indices.long()
        # Value checks read the host: always on the CPU, once an epoch on an accelerator.
        if indices.device.type == "cpu" or self._validated_epoch != self.progress.epoch:
            loop.check_range(indices, self.num_samples)
            self._validated_epoch = self.progress.epoch
        if losses.device != self.stats.device:
            self._to(losses.device)
        indices = indices.to(losses.device, non_blocking=True)
        observed = losses.detach()
        counted: Tensor | None = None
        if valid is None:
            all_indices, all_losses = gather_batch(indices, observed)
            if not self.stats.update(all_indices, all_losses):
                counted = observed.float().abs() < math.inf  # finite as the statistics see them
        else:
            valid = valid.to(losses.device, non_blocking=True)
            counted = valid & (observed.float().abs() < math.inf)
            self.stats.update(*gather_batch(indices, loop.nan_where_invalid(observed, valid)))
        if counted is not None:
            nonfinite = (valid if valid is not None else True) & ~counted
            self.nonfinite += nonfinite.sum()
            if losses.device.type == "cpu" and int(nonfinite.sum()) > 0:
                self._report_nonfinite()  # on the CPU at once; elsewhere at the next set_epoch
        self._recorded_in_epoch += 1
        self.counters.record_calls += 1
        self.counters.samples_forwarded += losses.numel()
        self.counters.record_seconds += time.perf_counter() - start
        return counted

    def _scaled(self, loss: Tensor) -> Tensor:
        """``loss`` times the method's loss scale in a pruned epoch (the product skipped at 1)."""
        epoch = self.progress.epoch
        if epoch is None or not self.is_pruned_epoch(epoch):
            return loss
        scale = self.policy.loss_scale(self.num_samples, self.epoch_size(epoch))
        return loss if scale == 1.0 else loss * scale

    def _warn_if_nothing_recorded(self) -> None:
        epoch = self.progress.epoch
        if epoch is not None and self._recorded_in_epoch == 0 and self._warned_epoch != epoch:
            self._warned_epoch = epoch  # once
            logger.warning(
                "epoch %d ended with no loss recorded: the statistics learned nothing, so "
                "selection runs on stale or empty ones. Pass each batch's per-sample losses "
                "through pruner.loss(...) (or record(...)) and back-propagate what it returns",
                epoch,
            )

    def _report_nonfinite(self, epoch_ended: bool = False) -> None:
        """Log NaN and inf losses at most once an epoch (reads one count on the host)."""
        epoch = self.progress.epoch
        if self._reported_epoch == epoch:
            if epoch_ended:  # the rest of an epoch already reported is not reported again
                self._nonfinite_reported = int(self.nonfinite)
            return
        count = int(self.nonfinite)
        new = count - self._nonfinite_reported
        self._nonfinite_reported = count
        if new == 0:
            return
        self._reported_epoch = epoch
        where = "before the first epoch" if epoch is None else f"in epoch {epoch}"
        logger.warning(
            "%d NaN or inf losses %s (%d in the run so far) were left out of the statistics "
            "and of the loss (reported at most once an epoch); the run may be diverging",
            new,
            where,
            count,
        )

    def _to(self, device: torch.device) -> None:
        self.stats.to(device)
        self.selected_count = self.selected_count.to(device)
        self.nonfinite = self.nonfinite.to(device)
        for name in ("weights", "subset"):
            value = getattr(self.progress, name)
            if value is not None:
                setattr(self.progress, name, value.to(device))

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
        rows = self.progress.subset if self.shard is None else self._shard_of_subset()
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
        return state.save(self, self.stats.table, self.selected_count)

    def gathered_state_dict(self) -> dict[str, Any]:
        """The whole state, on every rank, as an unsharded pruner would save it.

        A collective call under sharded statistics (every rank must call it): the shards'
        statistics and counts are all-gathered, so each rank briefly holds all N rows. Loads
        into sharded and unsharded pruners alike (a sharded one keeps its own rows).
        """
        if self.shard is None:
            return self.state_dict()
        saved = state.save(
            self,
            all_gather_varlen(self.stats.table.flatten()).view(-1, 3),
            all_gather_varlen(self.selected_count),
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


def _check_device(device: Any) -> torch.device:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidValue(
            f"device={device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if parsed.type == "meta":
        raise InvalidValue("device='meta' holds no data: the statistics need a real device")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InvalidValue(f"device={device!r} was asked for, but CUDA is not available here")
    return parsed


def _check_selection(selection: Any, method: str, start: int, end: int) -> None:
    """Refuse what a policy's ``select`` returned unless it is a sorted set of its rows."""
    problem = None
    if not isinstance(selection, Selection):
        problem = f"returned {state.describe(selection)}, not a Selection"
    else:
        indices, weights = selection.indices, selection.weights
        if not isinstance(indices, Tensor) or indices.dim() != 1 or indices.is_floating_point():
            problem = f"returned indices {state.describe(indices)}, not a 1-D integer tensor"
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
