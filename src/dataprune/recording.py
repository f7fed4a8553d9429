"""The Pruner's steps in a training loop: ``loss`` for each batch, ``record``, ``end_epoch``.

They fold each batch's per-sample losses into the statistics, run a method's own steps (its
in-batch selection, its loss scale, its measurement of the samples an epoch left out) through
the policy's hooks, and count what was forwarded and back-propagated.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from . import loop
from .distributed import gather_batch, world
from .errors import InvalidValue
from .sampler import shard

if TYPE_CHECKING:
    from .policies import Policy, SelectionContext
    from .state import Counters, Progress
    from .stats import SampleStats

logger = logging.getLogger("dataprune")


class Recording:
    """The loop's steps of :class:`dataprune.Pruner` (a part of it, kept in its own file)."""

    num_samples: int
    method: str
    prune: float
    policy: Policy
    stats: SampleStats
    progress: Progress
    counters: Counters
    nonfinite: Tensor
    selected_count: Tensor
    _validated_epoch: int | None
    _nonfinite_reported: int
    _reported_epoch: int | None
    _recorded_in_epoch: int
    _ended_epoch: int | None
    _warned_epoch: int | None
    _attached: list[torch.optim.Optimizer]
    _warned_unattached: bool
    _warned_unreadable: bool

    if TYPE_CHECKING:  # defined by the Pruner

        def is_pruned_epoch(self, epoch: int) -> bool: ...
        def epoch_size(self, epoch: int) -> int: ...
        def _context(self, rnd: int, k: int) -> SelectionContext: ...

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
        return loop.masked_mean(kept, kept_valid)

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
        return total.sum() / count

    def end_epoch(
        self,
        model: nn.Module,
        data: DataLoader | Callable[[Tensor], Any] | None,
        sample_losses: loop.SampleLosses,
        batch_size: int | None = None,
    ) -> None:
        """Finish the current epoch: the method's own step after training, if it has one.

        Call it once an epoch's batches are done (before evaluating or saving a checkpoint).
        Most methods do nothing here. ``kakurenbo`` measures the samples it left out: it reads
        them as ``data`` does (the training DataLoader, or a function from a tensor of indices
        to their batch, with ``batch_size``), moves each batch to the device the losses came
        from, and records ``sample_losses(batch)`` with ``model`` in evaluation mode and no
        gradients (no BatchNorm statistic changes); each rank takes an equal share. Data that
        cannot be read by index (``None``, or a loader over an ``IterableDataset`` such as
        WebDataset's) cannot be measured: the method goes on without that step, and says so once.
        """
        epoch = self.progress.epoch
        if epoch is None:
            raise RuntimeError("end_epoch() before any epoch: call pruner.set_epoch(epoch) first")
        self._warn_if_nothing_recorded()
        self.lr_scale()  # says so if the method scales the rate of an unattached optimizer
        if self._ended_epoch == epoch or not self.is_pruned_epoch(epoch):
            return
        self._ended_epoch = epoch
        hidden = torch.ones(self.num_samples, dtype=torch.bool, device=self.stats.device)
        hidden[self.progress.subset] = False
        context = self._context(self.progress.round or 0, self.epoch_size(epoch))
        todo = self.policy.remeasure(context, hidden.nonzero().squeeze(1))
        if todo.numel() == 0:
            return
        if data is None or (
            isinstance(data, DataLoader) and isinstance(data.dataset, IterableDataset)
        ):
            if not self._warned_unreadable:
                self._warned_unreadable = True
                logger.warning(
                    "method=%r measures some of the samples it left out after each epoch, "
                    "which needs data that can be read by index; this data is read in order "
                    "only, so the method goes on without that measurement",
                    self.method,
                )
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
            all_indices, all_losses = gather_batch(indices, loop.nan_where_invalid(observed, valid))
            self.stats.update(all_indices, all_losses)
        self.policy.observe(self.stats, all_indices, all_losses)
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

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Run the method's learning-rate scale around each ``optimizer.step()``.

        Most methods have none (a factor of 1). One that trains fewer steps in a pruned epoch
        may ask for larger ones (``kakurenbo``: ``1 / (1 - F)``): each step then runs at that
        factor times the schedule's rate, through the optimizer's own step hooks
        (``register_step_pre_hook``), and the rate is restored right after, so the scheduler
        never sees it. Call it once for each optimizer; the framework integrations do. An
        optimizer that wraps another (Accelerate's, Lightning's) is attached through it.
        """
        inner = optimizer
        while hasattr(inner, "optimizer") and isinstance(inner.optimizer, torch.optim.Optimizer):
            inner = inner.optimizer
        if any(attached is inner for attached in self._attached):
            return
        self._attached.append(inner)
        rates: list[Any] = []

        def before(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            scale = self.lr_scale()
            if scale != 1.0:
                rates[:] = [group["lr"] for group in opt.param_groups]
                for group in opt.param_groups:
                    group["lr"] = group["lr"] * scale

        def after(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            for group, rate in zip(opt.param_groups, rates, strict=False):
                group["lr"] = rate
            rates.clear()

        inner.register_step_pre_hook(before)
        inner.register_step_post_hook(after)

    def lr_scale(self) -> float:
        """The current epoch's factor on the learning rate (1 for most methods and epochs)."""
        epoch = self.progress.epoch
        if epoch is None or not self.is_pruned_epoch(epoch):
            return 1.0
        scale = self.policy.lr_scale(self.num_samples, self.epoch_size(epoch))
        if scale != 1.0 and not self._attached and not self._warned_unattached:
            self._warned_unattached = True
            logger.warning(
                "method=%r trains a pruned epoch at %.3g times the learning rate, but no "
                "optimizer is attached: call pruner.attach(optimizer) once, before training",
                self.method,
                scale,
            )
        return scale

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
        self.policy.buffers = {k: v.to(device) for k, v in self.policy.buffers.items()}
        self.selected_count = self.selected_count.to(device)
        self.nonfinite = self.nonfinite.to(device)
        for name in ("weights", "subset"):
            value = getattr(self.progress, name)
            if value is not None:
                setattr(self.progress, name, value.to(device))
