"""The Pruner: decides each epoch's subset and learns from the losses the loop already computes."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ._validation import check_bool, check_float, check_int
from .distributed import (
    all_gather_indices,
    all_gather_varlen,
    all_reduce_sum,
    gather_batch,
    host_group,
    world,
)
from .errors import InvalidType, InvalidValue
from .policies import Selection, SelectionContext, get_policy
from .sampler import PrunedSampler
from .schedule import PruneSchedule, budget, check_schedule, epoch_budgets
from .stats import MAX_SAMPLES, SEEN, VAR, SampleStats

logger = logging.getLogger("dataprune")

#: An upper bound on ``epochs`` (and ``every``), far past any real run.
MAX_EPOCHS = 1_000_000

_STATE_FORMAT = 2
_CONFIG_KEYS = (
    "num_samples",
    "method",
    "prune",
    "prune_schedule",
    "prune_end",
    "epochs",
    "seed",
    "every",
    "warmup_epochs",
    "anneal_epochs",
    "rescale",
    "alpha",
    "budgets",
)


class Pruner:
    """Dynamic data pruning for any PyTorch training loop.

    Args:
        num_samples: size N of the training set.
        method: one of ``dataprune.methods()``.
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
        compile: fold losses into the statistics through ``torch.compile``: fewer, fused
            kernels per ``record`` (``benchmarks/overhead.py`` measures both paths), after a
            compile on first use (5 to 20 s on a CPU; again for batches of 1 or over 32766
            samples, and for another alpha or device). Statistics match the eager path to
            float rounding, not bit for bit; either path is deterministic.
        **options: the method's own options (``Policy.options``), e.g. ``epsilon`` for
            ``epsilon-greedy``, ``c`` and ``bonus`` for ``ucb``, ``scores`` for ``static-score``.
    """

    def __init__(
        self,
        num_samples: int,
        method: str = "epsilon-greedy",
        prune: float = 0.3,
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
        self._weights: Tensor | None = None  # per-sample loss weights while rescaling
        self._subset: Tensor | None = None  # the pruned subset (None: all samples)
        self._round: int | None = None
        self.epoch: int | None = None
        self._validated_epoch: int | None = -1  # the epoch whose indices were range-checked
        self.epochs_started = 0
        self.samples_used = 0
        self.pruned_epochs = 0  # epochs started on a subset; selected_count counts within them
        self.selection_seconds = 0.0
        self.last_selection_seconds = 0.0  # of the latest set_epoch
        self.record_seconds = 0.0
        self.record_calls = 0
        self.samples_recorded = 0  # this process's samples passed to record(), before gathering
        self.samples_backpropagated = 0  # this process's samples kept by select_batch()
        self._nonfinite = torch.zeros((), dtype=torch.int64, device=device)
        self._nonfinite_reported = 0  # the count when NaN/inf losses were last logged
        self._reported_epoch: int | None = -1  # the epoch they were last logged in
        self._warned_no_predictions = False
        self.churn: list[dict[str, int]] = []  # samples entering/leaving at each re-selection

    # ----------------------------------------------------------------- schedule
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
        check_int("batch_size", batch_size, low=1)
        check_int("accumulate", accumulate, low=1)
        _, world_size = world()
        steps = 0
        for epoch in range(self.epochs):
            n = self.epoch_size(epoch)
            per_rank = n // world_size if drop_last else math.ceil(n / world_size)
            batches = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
            steps += math.ceil(batches / accumulate)
        return steps

    def uniform_epochs(self) -> bool:
        """Whether every epoch trains the same number of samples (no warm-up or anneal)."""
        return len({self.epoch_size(epoch) for epoch in range(self.epochs)}) == 1

    # ---------------------------------------------------------------- selection
    def set_epoch(self, epoch: int) -> None:
        """Decide the subset for ``epoch``.

        Epochs run forward: calling it again for the current epoch changes nothing, a later
        epoch may skip some (the skipped ones count as not trained in :meth:`summary`), and an
        earlier one is refused, since the statistics already hold the later epochs' losses.
        """
        check_int("epoch", epoch, low=0, high=self.epochs - 1)
        if epoch == self.epoch:
            return
        if self.epoch is not None and epoch < self.epoch:
            raise InvalidValue(
                f"set_epoch({epoch}) after epoch {self.epoch}: epochs run forward, and the "
                f"statistics already hold the losses of epoch {self.epoch}. To train epoch "
                f"{epoch} again, build a new Pruner or load a state_dict saved before it"
            )
        self._report_nonfinite(epoch_ended=True)
        self.epoch = epoch
        self.epochs_started += 1
        started = time.perf_counter()
        if not self.is_pruned_epoch(epoch):
            self._use_subset(None, None)
        else:
            rnd = (epoch - self.warmup_epochs) // self.every if self.policy.reselects else 0
            k = self.budgets[epoch]
            # A method that selects once selects again (in the same round) when the budget moves.
            if rnd != self._round or self._subset is None or self._subset.numel() != k:
                ctx = SelectionContext(
                    stats=self.stats,
                    k=k,
                    round=rnd,
                    seed=self.seed,
                    offset=self.stats.offset,
                    total=None if self.shard is None else self.num_samples,
                    rounds=self.rounds,
                )
                selection = self.policy.select(ctx)
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
                self._round = rnd
                self._use_subset(indices, weights, stayed)
        if self.is_pruned_epoch(epoch):
            self._count_selected()
            self.pruned_epochs += 1
        self.samples_used += self.epoch_size(epoch)
        self.last_selection_seconds = time.perf_counter() - started
        self.selection_seconds += self.last_selection_seconds

    def _count_selected(self) -> None:
        if self.shard is None:
            self.selected_count[self.indices()] += 1
        else:
            self.selected_count[self._shard_of_subset() - self.shard[0]] += 1

    def _shard_of_subset(self) -> Tensor:
        """The current subset's indices within this rank's shard (the subset is sorted)."""
        start, end = self.shard
        bounds = torch.tensor([start, end], device=self._subset.device)
        lo, hi = torch.searchsorted(self._subset, bounds).tolist()
        return self._subset[lo:hi]

    def _stayed_in_shard(self, local: Tensor) -> int | None:
        """How many of this shard's newly selected samples were selected before (all ranks)."""
        if self._subset is None:
            return None
        start, end = self.shard
        before = torch.zeros(end - start, dtype=torch.bool, device=local.device)
        before[self._shard_of_subset() - start] = True
        return int(all_reduce_sum(before[local - start].sum()))

    def _use_subset(
        self, indices: Tensor | None, weights: Tensor | None, stayed: int | None = None
    ) -> None:
        if indices is not None and self._subset is not None:
            if stayed is None:
                kept = torch.zeros(self.num_samples, dtype=torch.bool, device=self.stats.device)
                kept[self._subset] = True
                stayed = int(kept[indices].sum())
            self.churn.append(
                {
                    "epoch": self.epoch,
                    "entered": indices.numel() - stayed,
                    "left": self._subset.numel() - stayed,
                }
            )
        self._subset = indices
        if not self.rescale:
            return
        if self._weights is None:
            self._weights = torch.ones(self.num_samples, device=self.stats.device)
        self._weights.fill_(1.0)
        if indices is not None and weights is not None:
            self._weights[indices] = weights.to(self._weights.dtype)

    def indices(self) -> Tensor:
        """This epoch's subset as a sorted LongTensor on the statistics' device."""
        if self.epoch is None:
            raise RuntimeError("no subset yet: call pruner.set_epoch(epoch) first")
        if self._subset is None:
            return torch.arange(self.num_samples, device=self.stats.device)
        return self._subset

    def hidden_indices(self) -> Tensor:
        """The samples left out of this epoch, sorted (empty in an epoch on all samples).

        ``kakurenbo`` refreshes them: after the epoch, forward them without gradients and
        ``record`` their losses and predictions, so that a hidden sample whose loss has grown
        is trained again (under torch.distributed, each rank forwards an equal share, e.g.
        ``dataprune.sampler.shard(hidden, rank, world_size, drop_last=False)``). Leave the
        model as it was: in training mode, BatchNorm's running statistics would otherwise be
        set by the hidden (easiest) samples alone, so restore the buffers afterwards.
        """
        kept = self.indices()
        hidden = torch.ones(self.num_samples, dtype=torch.bool, device=kept.device)
        hidden[kept] = False
        return hidden.nonzero().squeeze(1)

    def lr_scale(self) -> float:
        """The factor for this epoch's learning rate: ``1 / (1 - F_e)`` for a method that asks
        for it (``kakurenbo``), with ``F_e = 1 - k_e / N`` the fraction this epoch leaves out,
        so the epoch's fewer steps travel as far; 1 for every other method and unpruned epoch.

        Multiply each parameter group's ``lr`` by it for the optimizer step and restore it
        afterwards, so that the LR schedule itself is untouched.
        """
        if self.epoch is None:
            raise RuntimeError("no epoch yet: call pruner.set_epoch(epoch) first")
        if not self.policy.scales_lr:
            return 1.0
        return self.num_samples / self.epoch_size(self.epoch)

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

    # ------------------------------------------------------------ within a batch
    def select_batch(self, losses: Tensor) -> Tensor:
        """The positions in the batch of the samples to back-propagate: its highest losses.

        For methods that thin batches (``selective-backprop``): of B losses, the
        ``max(1, round((1 - prune) B))`` highest are kept (NaN counts as the lowest, equal
        losses go to the earlier sample), as ascending int64 positions: ``x[keep]`` takes
        them, with no host sync on a GPU (a bool mask as an index would sync). Forward the
        batch without gradients, ``record`` its losses, then forward and back-propagate
        ``x[keep]`` only.
        """
        if not self.policy.selects_in_batch:
            raise RuntimeError(
                f"select_batch() thins batches for methods that select within a batch "
                f"(selective-backprop); method={self.method!r} selects whole epochs"
            )
        if not isinstance(losses, Tensor) or not losses.is_floating_point() or losses.dim() != 1:
            raise InvalidType(
                f"losses must be a 1-D floating-point tensor, got {_describe(losses)}"
            )
        kept = budget(losses.numel(), self.prune) if losses.numel() else 0
        keys = losses.detach().float().nan_to_num(-math.inf, math.inf, -math.inf)
        order = torch.sort(keys, descending=True, stable=True).indices
        self.samples_backpropagated += kept
        return order[:kept].sort().values

    # ------------------------------------------------------------------- record
    def record(
        self,
        indices: Tensor,
        losses: Tensor,
        valid: Tensor | None = None,
        *,
        correct: Tensor | None = None,
        confidence: Tensor | None = None,
    ) -> Tensor:
        """Store per-sample losses; return their (weighted) mean, ready for ``.backward()``.

        ``losses`` must hold one loss per sample (``reduction='none'``). ``valid``, a bool
        tensor of the same shape, marks samples that have no loss (a sequence whose tokens are
        all padding, see :func:`dataprune.sequence_losses`): they leave the statistics and the
        mean untouched and are not counted as non-finite. NaN and inf losses are
        left out of the statistics and of the mean, and logged (logger ``"dataprune"``) at most
        once an epoch; ``summary()["nonfinite_losses_skipped"]`` counts them. They still reach
        the gradients: the gradient of an inf loss such as ``-log(0)`` is NaN whatever this
        returns, so a run that produces them is diverging. Under torch.distributed every rank
        gathers
        all ranks' indices (int64) and losses (float32), so statistics stay identical. A sample
        repeated within one call is updated once, with the mean of its finite losses.

        ``correct`` (bool) and ``confidence`` (float in [0, 1]), given together and shaped like
        ``losses``, describe each sample's prediction (:func:`dataprune.classification_predictions`
        makes them from logits); samples with a finite, valid loss keep the latest one in
        ``stats.correct_confidence``, gathered over ranks with the losses. ``kakurenbo`` hides
        only samples predicted correctly with confidence at least its ``tau``; without them,
        none qualifies (it warns once). Confidence values are checked on the CPU at every call,
        on an accelerator once an epoch, as indices are.
        """
        start = time.perf_counter()
        first_in_epoch = self._validated_epoch != self.epoch
        indices = self._check_batch(indices, losses)
        outcome = self._check_predictions(correct, confidence, losses, first_in_epoch)
        if losses.device != self.stats.device:
            self._to(losses.device)
        if indices.device != losses.device:
            indices = indices.to(losses.device, non_blocking=True)
        # Finite as the statistics see them: in float32 (a float64 1e300 is not).
        finite = losses.detach().float().abs() < math.inf
        observed = losses.detach()
        if valid is not None:
            valid = self._check_valid(valid, losses).to(losses.device, non_blocking=True)
            observed = torch.where(valid, observed, math.nan)  # the statistics skip NaN
            nonfinite = (valid & ~finite).sum()
            finite = finite & valid
        if outcome is None:
            all_indices, all_losses = gather_batch(indices, observed)
        else:  # one collective for both; NaN: no prediction kept where no loss is
            outcome = torch.where(finite, outcome.to(losses.device, non_blocking=True), math.nan)
            all_indices, gathered = gather_batch(
                indices, torch.stack([observed.float(), outcome], 1)
            )
            all_losses, all_outcomes = gathered.unbind(1)
            self.stats.update_predictions(all_indices, all_outcomes)
        self.stats.update(all_indices, all_losses)

        kept = finite.sum()
        if valid is None:
            nonfinite = losses.numel() - kept
        self._nonfinite += nonfinite
        if losses.device.type == "cpu" and int(nonfinite) > 0:
            self._report_nonfinite()  # on the CPU at once; elsewhere at the next set_epoch
        # Left out of the mean. This cannot stop a NaN gradient from the graph behind an inf
        # loss (the chain rule multiplies this zero by an infinite derivative).
        safe = torch.where(finite, losses, 0.0)
        if self._weights is not None:
            safe = safe * self._weights.index_select(0, indices).to(safe.dtype)
        result = safe.sum() / kept.clamp_min(1)
        self.record_calls += 1
        self.samples_recorded += indices.numel()
        self.record_seconds += time.perf_counter() - start
        return result

    def _check_batch(self, indices: Tensor, losses: Tensor) -> Tensor:
        if not isinstance(losses, Tensor) or not losses.is_floating_point():
            raise InvalidType(f"losses must be a floating-point tensor, got {_describe(losses)}")
        if losses.is_meta or (isinstance(indices, Tensor) and indices.is_meta):
            raise InvalidType("record() needs real tensors, not tensors on the 'meta' device")
        if losses.dim() == 0:
            raise InvalidValue(
                "losses is a scalar, but record() needs one loss per sample: compute the loss "
                "with reduction='none', e.g. F.cross_entropy(logits, y, reduction='none')"
            )
        if not isinstance(indices, Tensor) or indices.dtype not in (torch.int64, torch.int32):
            raise InvalidType(
                f"indices must be an int64 (or int32) tensor of dataset indices, got "
                f"{_describe(indices)}"
            )
        if losses.dim() != 1 or indices.shape != losses.shape:
            raise InvalidValue(
                f"losses must have shape (batch,) matching indices; got losses "
                f"{tuple(losses.shape)} and indices {tuple(indices.shape)}"
            )
        indices = indices.long()
        # Value checks need a host sync: always on the CPU, once an epoch on an accelerator.
        if indices.device.type == "cpu" or self._validated_epoch != self.epoch:
            low, high = (int(v) for v in torch.aminmax(indices)) if indices.numel() else (0, 0)
            if low < 0 or high >= self.num_samples:
                raise IndexError(
                    f"indices must lie in [0, num_samples={self.num_samples}); got values in "
                    f"[{low}, {high}]"
                )
            self._validated_epoch = self.epoch
        return indices

    def _check_predictions(
        self, correct: Any, confidence: Any, losses: Tensor, check_values: bool
    ) -> Tensor | None:
        """``confidence`` where ``correct``, else 0 (None without them); refuses bad ones."""
        if correct is None and confidence is None:
            if self.policy.uses_predictions and not self._warned_no_predictions:
                self._warned_no_predictions = True
                logger.warning(
                    "method=%r hides only samples predicted correctly and confidently, but "
                    "record() got no correct= and confidence=: no sample qualifies, so the "
                    "hidden samples are drawn uniformly (see dataprune.classification_predictions)",
                    self.method,
                )
            return None
        if correct is None or confidence is None:
            raise InvalidType(
                "record() takes correct= and confidence= together; got only "
                f"{'correct' if confidence is None else 'confidence'}="
            )
        if not isinstance(correct, Tensor) or correct.dtype != torch.bool:
            raise InvalidType(f"correct must be a bool tensor, got {_describe(correct)}")
        if not isinstance(confidence, Tensor) or not confidence.is_floating_point():
            raise InvalidType(
                f"confidence must be a floating-point tensor, got {_describe(confidence)}"
            )
        for name, value in (("correct", correct), ("confidence", confidence)):
            if value.shape != losses.shape:
                raise InvalidValue(
                    f"{name} must have the shape of losses, {tuple(losses.shape)}; got "
                    f"{tuple(value.shape)}"
                )
        confidence = confidence.detach().float()
        if (confidence.device.type == "cpu" or check_values) and confidence.numel():
            low, high = (float(v) for v in torch.aminmax(confidence.nan_to_num(-1.0)))
            if low < 0 or high > 1:
                raise InvalidValue(
                    f"confidence must lie in [0, 1] (a probability); got values in "
                    f"[{low:g}, {high:g}] (NaN shown as -1)"
                )
        return torch.where(correct.to(confidence.device), confidence, 0.0)

    @staticmethod
    def _check_valid(valid: Any, losses: Tensor) -> Tensor:
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
            raise InvalidType(f"valid must be a bool tensor (or None), got {_describe(valid)}")
        if valid.shape != losses.shape:
            raise InvalidValue(
                f"valid must have the shape of losses, {tuple(losses.shape)}; got "
                f"{tuple(valid.shape)}"
            )
        return valid

    def _report_nonfinite(self, epoch_ended: bool = False) -> None:
        """Log NaN and inf losses at most once an epoch (reads one count on the host)."""
        if self._reported_epoch == self.epoch:
            if epoch_ended:  # the rest of an epoch already reported is not reported again
                self._nonfinite_reported = int(self._nonfinite)
            return
        count = int(self._nonfinite)
        new = count - self._nonfinite_reported
        self._nonfinite_reported = count
        if new == 0:
            return
        self._reported_epoch = self.epoch
        where = "before the first epoch" if self.epoch is None else f"in epoch {self.epoch}"
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
        self._nonfinite = self._nonfinite.to(device)
        if self._weights is not None:
            self._weights = self._weights.to(device)
        if self._subset is not None:
            self._subset = self._subset.to(device)

    # ----------------------------------------------------------------- reports
    def summary(self) -> dict[str, Any]:
        """Samples used so far, realised fraction pruned, and time spent in the machinery.

        ``fraction_pruned`` is ``1 - samples_used / (N * epochs_started)``, over the epochs
        started with ``set_epoch`` (epochs skipped over are not counted as trained).
        ``samples_used`` is what the selection planned (``epoch_size`` of each epoch started);
        ``samples_recorded`` is what this process passed to ``record()``, the realised budget
        where a sequential reader gives ranks unequal shares (see
        ``dataprune.formats.webdataset``). ``record_seconds`` is host time: on CUDA,
        record() only queues kernels.
        """
        self._report_nonfinite()
        full = self.num_samples * self.epochs_started
        return {
            "method": self.method,
            "epochs_started": self.epochs_started,
            "samples_used": self.samples_used,
            "fraction_pruned": 1 - self.samples_used / full if full else 0.0,
            "selection_seconds": self.selection_seconds,
            "record_seconds": self.record_seconds,
            "record_calls": self.record_calls,
            "samples_recorded": self.samples_recorded,
            "samples_backpropagated": self.samples_backpropagated,
            "nonfinite_losses_skipped": int(self._nonfinite),
        }

    def epoch_metrics(self) -> dict[str, float]:
        """The current epoch's pruning figures, for a logger (one host sync).

        ``fraction_pruned`` and ``samples_used`` of this epoch, ``selection_seconds`` spent
        choosing its subset, and in a pruned epoch the mean loss statistic (the EMA) of the kept
        and of the dropped samples among those seen so far. A collective under ``shard_stats``.
        """
        if self.epoch is None:
            raise RuntimeError("no epoch yet: call pruner.set_epoch(epoch) first")
        size = self.epoch_size(self.epoch)
        metrics = {
            "fraction_pruned": 1 - size / self.num_samples,
            "samples_used": float(size),
            "selection_seconds": self.last_selection_seconds,
        }
        if self._subset is None:
            return metrics
        kept = torch.zeros(self.stats.num_rows, dtype=torch.bool, device=self.stats.device)
        kept[self._subset if self.shard is None else self._shard_of_subset() - self.shard[0]] = True
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
        """Statistics, subset, counters and configuration; loadable with ``weights_only=True``.

        Random choices are counter-based (hashed from ``seed``, the round and sample indices),
        so no RNG state is needed: a resumed run selects exactly what an uninterrupted one
        would have.

        With sharded statistics (``shard_stats=True`` under torch.distributed) each rank's
        state holds only its shard's rows of ``stats`` and ``selected_count`` (``shard`` gives
        their global range) and everything else whole; it loads back into the same rank of a
        run with the same world size. :meth:`gathered_state_dict` gives the whole state instead.
        """
        return {
            "format": _STATE_FORMAT,
            **{key: getattr(self, key) for key in _CONFIG_KEYS},
            "options": self.policy.state(),
            "shard": None if self.shard is None else list(self.shard),
            "stats": self.stats.table.cpu(),
            "correct_confidence": self.stats.correct_confidence.cpu(),
            "selected_count": self.selected_count.cpu(),
            "weights": None if self._weights is None else self._weights.cpu(),
            "subset": None if self._subset is None else self._subset.cpu(),
            "round": self._round,
            "epoch": self.epoch,
            "epochs_started": self.epochs_started,
            "samples_used": self.samples_used,
            "pruned_epochs": self.pruned_epochs,
            "selection_seconds": self.selection_seconds,
            "record_seconds": self.record_seconds,
            "record_calls": self.record_calls,
            "samples_recorded": self.samples_recorded,
            "samples_backpropagated": self.samples_backpropagated,
            "nonfinite": int(self._nonfinite),
            "churn": list(self.churn),
        }

    def gathered_state_dict(self) -> dict[str, Any]:
        """The whole state, on every rank, as an unsharded pruner would save it.

        A collective call under sharded statistics (every rank must call it): the shards'
        statistics and counts are all-gathered, so each rank briefly holds all N rows. Loads
        into sharded and unsharded pruners alike (a sharded one keeps its own rows).
        """
        state = self.state_dict()
        if self.shard is not None:
            state["shard"] = None
            state["stats"] = all_gather_varlen(self.stats.table.flatten()).view(-1, 3).cpu()
            state["correct_confidence"] = all_gather_varlen(self.stats.correct_confidence).cpu()
            state["selected_count"] = all_gather_varlen(self.selected_count).cpu()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict`` from a pruner of the same configuration.

        Refuses, with the reason, a state saved with other settings or method options, or one
        that does not fit this pruner (wrong sizes, indices out of range). A sharded pruner
        loads either its own shard's state or a whole one (from :meth:`gathered_state_dict` or
        an unsharded pruner), keeping its rows of the latter. Rows that are not valid statistics
        (not finite, a negative variance or count: no version of dataprune writes them) load as
        unseen samples, and prediction confidences outside [0, 1] as unknown (a state saved
        before predictions were kept has none: every sample loads as not known correct).
        """
        rows = _check_state(self, state)
        device = self.stats.device
        # Copies, so that this pruner never shares storage with the state or its source.
        table = state["stats"][rows].to(device, torch.float32, copy=True)
        valid = torch.isfinite(table).all(1) & (table[:, VAR] >= 0) & (table[:, SEEN] >= 0)
        table[~valid] = 0.0
        self.stats.table = table
        # States saved before predictions were kept hold none: no sample is known correct.
        saved = state.get("correct_confidence")
        confidence = torch.zeros(table.shape[0], device=device)
        if saved is not None:
            confidence = saved[rows].to(device, torch.float32, copy=True)
            confidence[~((confidence >= 0) & (confidence <= 1))] = 0.0  # NaN too
        self.stats.correct_confidence = confidence
        self.selected_count = state["selected_count"][rows].to(device, torch.int32, copy=True)
        weights, subset = state["weights"], state["subset"]
        self._weights = None if weights is None else weights.to(device, torch.float32, copy=True)
        self._subset = None if subset is None else subset.to(device, torch.int64, copy=True)
        self._round = state["round"]
        self.epoch = state["epoch"]
        self.epochs_started = state["epochs_started"]
        self.samples_used = state["samples_used"]
        self.pruned_epochs = state["pruned_epochs"]
        self.selection_seconds = state["selection_seconds"]
        self.record_seconds = state["record_seconds"]
        self.record_calls = state["record_calls"]
        self.samples_recorded = state["samples_recorded"]
        self.samples_backpropagated = state["samples_backpropagated"]
        self._nonfinite = torch.tensor(state["nonfinite"], device=device)
        self._nonfinite_reported = state["nonfinite"]
        self.churn = list(state["churn"])


_COUNTERS = (
    "epochs_started",
    "samples_used",
    "pruned_epochs",
    "record_calls",
    "samples_recorded",
    "samples_backpropagated",
    "nonfinite",
)
_STATE_KEYS = (
    "format",
    *_CONFIG_KEYS,
    "options",
    "shard",
    "stats",
    "selected_count",
    "weights",
    "subset",
    "round",
    "epoch",
    "epochs_started",
    "samples_used",
    "pruned_epochs",
    "selection_seconds",
    "record_seconds",
    "record_calls",
    "samples_recorded",
    "samples_backpropagated",
    "nonfinite",
    "churn",
)


def check_state_fields(state: Any) -> None:
    """Refuse a pruner state whose fields are missing or of the wrong kind (any pruner's).

    Used by ``load_state_dict`` and by tools that read a saved state without a Pruner.
    """
    if not isinstance(state, Mapping):
        raise InvalidType(
            f"state must be the dict that Pruner.state_dict() returns, got {_describe(state)}"
        )
    if state.get("format") != _STATE_FORMAT:
        raise InvalidValue(
            f"unsupported pruner state format {state.get('format')!r}; this version of "
            f"dataprune reads format {_STATE_FORMAT} (states saved by Pruner.state_dict())"
        )
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise InvalidValue(
            f"the pruner state lacks {', '.join(repr(k) for k in missing)}; pass a state "
            "saved by Pruner.state_dict()"
        )
    for key in (*_COUNTERS, "num_samples", "epochs", "every", "warmup_epochs", "anneal_epochs"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidValue(f"the pruner state's {key!r} must be an int >= 0, got {value!r}")
    for key in ("selection_seconds", "record_seconds"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise InvalidValue(f"the pruner state's {key!r} must be a number >= 0, got {value!r}")
    for key in ("epoch", "round"):
        value = state[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise InvalidValue(
                f"the pruner state's {key!r} must be None or an int >= 0, got {value!r}"
            )
    if not isinstance(state["method"], str) or not isinstance(state["prune"], float):
        raise InvalidValue("the pruner state's 'method' must be a str and 'prune' a float")
    budgets = state["budgets"]
    if not isinstance(budgets, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in budgets
    ):
        raise InvalidValue("the pruner state's 'budgets' must be a list of ints >= 1")
    churn = state["churn"]
    if not isinstance(churn, list) or not all(
        isinstance(c, dict) and all(isinstance(c.get(k), int) for k in ("epoch", "entered", "left"))
        for c in churn
    ):
        raise InvalidValue("the pruner state's 'churn' must be a list of {epoch, entered, left}")
    stats, counts = state["stats"], state["selected_count"]
    if not isinstance(stats, Tensor) or stats.dim() != 2 or stats.shape[1] != 3:
        raise InvalidValue(
            f"the pruner state's 'stats' must be an (N, 3) tensor, got {_describe(stats)}"
        )
    if (
        not isinstance(counts, Tensor)
        or counts.is_floating_point()
        or counts.dtype == torch.bool
        or counts.shape != stats.shape[:1]
    ):
        raise InvalidValue(
            f"the pruner state's 'selected_count' must be an integer tensor of {stats.shape[0]} "
            f"counts, got {_describe(counts)}"
        )
    if counts.numel() and (int(counts.min()) < 0 or int(counts.max()) > state["pruned_epochs"]):
        raise InvalidValue(
            f"the pruner state's 'selected_count' must lie in [0, pruned_epochs="
            f"{state['pruned_epochs']}]"
        )


def _check_state(pruner: Pruner, state: Any) -> slice:
    """Refuse a state ``pruner`` cannot load; return the rows of its statistics to take."""
    check_state_fields(state)
    saved = {key: state[key] for key in _CONFIG_KEYS} | {"options": state["options"]}
    current = {key: getattr(pruner, key) for key in _CONFIG_KEYS}
    current["options"] = pruner.policy.state()
    for key, value in current.items():
        if key == "budgets" and saved[key] != value:  # the rest agrees: a callable's rates
            epoch = next(
                e for e, (a, b) in enumerate(zip(saved[key], value, strict=True)) if a != b
            )
            raise InvalidValue(
                f"state dict was saved with a prune_schedule that gives epoch {epoch} a budget "
                f"of {saved[key][epoch]}, but this pruner's gives {value[epoch]}; build the "
                "Pruner with the same schedule"
            )
        if saved[key] != value:
            raise InvalidValue(
                f"state dict was saved with {key}={saved[key]!r}, but this pruner has "
                f"{key}={value!r}; build the Pruner with the same settings"
            )
    n = pruner.num_samples
    saved_shard = state["shard"]
    if saved_shard is not None and list(saved_shard) == [0, n]:
        saved_shard = None  # one shard of one: the whole state
    rows = slice(None)
    if saved_shard is None and pruner.shard is not None:
        rows = slice(*pruner.shard)
    elif saved_shard is not None and tuple(saved_shard) != pruner.shard:
        raise InvalidValue(
            f"state dict holds the statistics of samples {list(saved_shard)} (one rank's "
            f"shard), but this pruner holds {list(pruner.shard or (0, n))}; "
            "load it on the same rank with the same world size, or save a "
            "gathered_state_dict()"
        )
    saved_rows = n if saved_shard is None else saved_shard[1] - saved_shard[0]
    _check_tensor(state, "stats", (saved_rows, 3), floating=True)
    if state.get("correct_confidence") is not None:
        _check_tensor(state, "correct_confidence", (saved_rows,), floating=True)
    if state["weights"] is not None:
        _check_tensor(state, "weights", (n,), floating=True)
        weights = state["weights"]
        if not bool((torch.isfinite(weights) & (weights > 0)).all()):
            raise InvalidValue("the pruner state's 'weights' must be finite and positive")
    epoch, subset = state["epoch"], state["subset"]
    if epoch is not None:
        check_int("state['epoch']", epoch, low=0, high=pruner.epochs - 1)
    pruned = epoch is not None and pruner.is_pruned_epoch(epoch)
    if (subset is not None) != pruned:
        raise InvalidValue(
            f"the pruner state's subset is {'missing' if pruned else 'present'} at epoch "
            f"{epoch}, which is {'a pruned' if pruned else 'not a pruned'} epoch"
        )
    if subset is not None:
        _check_tensor(state, "subset", (pruner.epoch_size(epoch),), floating=False)
        if subset.numel() and (int(subset.min()) < 0 or int(subset.max()) >= n):
            raise InvalidValue(
                f"the pruner state's subset holds indices in [{int(subset.min())}, "
                f"{int(subset.max())}], outside [0, num_samples={n})"
            )
        if subset.numel() > 1 and not bool((subset[1:] > subset[:-1]).all()):
            raise InvalidValue("the pruner state's subset is not sorted without repeats")
    return rows


def _check_tensor(state: Mapping[str, Any], key: str, shape: tuple, floating: bool) -> None:
    value = state[key]
    kind = "floating-point" if floating else "integer"
    if (
        not isinstance(value, Tensor)
        or value.is_floating_point() != floating
        or value.dtype == torch.bool
        or tuple(value.shape) != shape
    ):
        raise InvalidValue(
            f"the pruner state's {key!r} must be a {kind} tensor of shape {shape} for this "
            f"pruner, got {_describe(value)}"
        )


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
        problem = f"returned {_describe(selection)}, not a Selection"
    else:
        indices, weights = selection.indices, selection.weights
        if not isinstance(indices, Tensor) or indices.dim() != 1 or indices.is_floating_point():
            problem = f"returned indices {_describe(indices)}, not a 1-D integer tensor"
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


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
