"""Dynamic data pruning in PyTorch Lightning: one Callback (``pip install 'dataprune[lightning]'``).

::

    pruning = DataPruning()  # the recommended method, or method=..., prune=...

    class Model(L.LightningModule):
        def train_dataloader(self):
            return pruning.dataloader(train_set, batch_size=128)

        def sample_losses(self, batch):
            x, y = batch
            return F.cross_entropy(self(x), y, reduction="none")

        def training_step(self, batch, batch_idx):
            index, batch = batch
            return pruning.loss(index, batch, self.sample_losses)

    L.Trainer(max_epochs=8, callbacks=[pruning], use_distributed_sampler=False).fit(Model())

Every method runs: ``loss`` runs a method's in-batch step, and at each epoch's end the callback
runs the Pruner's ``end_epoch`` with the last ``sample_losses`` given to ``loss``.

What the callback guarantees, and how:

- The loader's sampler is the pruner's, already sharded per rank. Lightning would shard it a
  second time unless ``use_distributed_sampler=False`` (needed under DDP; checked).
- Lightning calls ``sampler.set_epoch`` at each epoch's start, which selects the subset; the
  callback checks it happened and logs ``dataprune/*`` metrics through the Trainer's logger.
- ``trainer.estimated_stepping_batches`` is the pruned run's exact optimizer-step count
  (``Pruner.total_steps``, with ``accumulate_grad_batches``). Where epochs differ in batches (see
  below) the callback sets the Trainer's ``max_steps`` to it, unless ``max_steps`` was given.
- The pruner is saved in Lightning checkpoints and restored from them, so
  ``trainer.fit(model, ckpt_path=...)`` continues with the same selections. Resume is exact from
  checkpoints taken at an epoch's end; Lightning itself warns that a mid-epoch resume is not.
- Lightning reads a loader's length once, at the start, and cuts later epochs to it. When the
  pruner's epochs differ in batches (warm-up, anneal, a prune-rate schedule), the loader
  therefore reports no length: each epoch ends when its sampler does, and the progress bar
  shows no per-epoch total.
- A method that keeps steps (``peek`` with ``steps=True``) gets a loader on
  ``Pruner.batch_sampler``: each pruned epoch has a full epoch's batches, smaller ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import IndexedDataset, IndexedDictDataset, Pruner
from ..errors import InvalidValue
from ..loop import SampleLosses
from ..policies import DEFAULT_METHOD, DEFAULT_PRUNE
from ..sampler import PrunedBatchSampler, PrunedSampler

METRIC_PREFIX = "dataprune/"


class _Unsized(Sampler):
    """The pruner's (batch) sampler without ``__len__``: Lightning then lets each epoch run to
    its end."""

    def __init__(self, sampler: PrunedSampler | PrunedBatchSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator:
        return iter(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


class DataPruning(pl.Callback):
    """A Lightning Callback that trains each epoch on the subset a :class:`dataprune.Pruner` picks.

    Args:
        method, prune, seed, **pruner_options: as for :class:`dataprune.Pruner` (``epochs`` is
            the Trainer's ``max_epochs``, ``num_samples`` the training set's length).

    The LightningModule calls :meth:`dataloader` in ``train_dataloader()`` and returns
    :meth:`loss`'s result from ``training_step``. The pruner is built when the loader is,
    after the process group exists; it is :attr:`pruner`. One callback serves one Trainer.
    """

    def __init__(
        self,
        method: str = DEFAULT_METHOD,
        prune: float = DEFAULT_PRUNE,
        seed: int = 0,
        **pruner_options: Any,
    ):
        super().__init__()
        for taken, source in (("epochs", "the Trainer's max_epochs"), ("num_samples", "len()")):
            if taken in pruner_options:
                raise InvalidValue(
                    f"DataPruning({taken}=...): the callback takes {taken} from {source} of the "
                    "training set or Trainer; leave it out"
                )
        self.pruner_args = {"method": method, "prune": prune, "seed": seed, **pruner_options}
        self.pruner: Pruner | None = None
        self._trainer: pl.Trainer | None = None
        self._loader: DataLoader | None = None
        self._restored: dict[str, Any] | None = None
        self._batch_size, self._drop_last = 1, False
        self._batches_done = 0  # training batches of the current epoch, on this rank
        self._sample_losses: SampleLosses | None = None  # the latest given to loss()

    # ------------------------------------------------------------ for the module
    def dataloader(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        **loader_options: Any,
    ) -> DataLoader:
        """The training DataLoader over ``dataset``; its batches are ``(index, item)``.

        ``dataset`` is wrapped in :class:`dataprune.IndexedDataset` unless it already is one
        (or an :class:`dataprune.IndexedDictDataset`, whose dict batches carry ``"index"``).
        ``shuffle`` orders each epoch's subset by ``(seed, epoch)``, the same on every rank.
        ``loader_options`` go to the DataLoader (``num_workers``, ``collate_fn``, ...), except
        ``sampler`` and ``batch_sampler``, which the pruner decides: for a method that keeps
        steps (``peek`` with ``steps=True``) the loader is built on
        :meth:`dataprune.Pruner.batch_sampler`, whose pruned epochs have smaller batches.
        """
        trainer = self._require_trainer()
        for option in ("sampler", "batch_sampler"):
            if option in loader_options:
                raise InvalidValue(f"dataloader(..., {option}=...): the pruner decides the order")
        if not isinstance(dataset, (IndexedDataset, IndexedDictDataset)):
            dataset = IndexedDataset(dataset)
        self._batch_size, self._drop_last = batch_size, drop_last
        pruner = self.pruner or self._build(trainer, len(dataset))
        sized = self._uniform_batches()
        if pruner.policy.keeps_steps():
            batches = pruner.batch_sampler(batch_size, shuffle=shuffle, drop_last=drop_last)
            self._loader = DataLoader(
                dataset, batch_sampler=batches if sized else _Unsized(batches), **loader_options
            )
        else:
            sampler = pruner.sampler(shuffle=shuffle, drop_last=drop_last)
            self._loader = DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=sampler if sized else _Unsized(sampler),
                drop_last=drop_last,
                **loader_options,
            )
        return self._loader

    def loss(self, indices: Tensor, batch: Any, sample_losses: SampleLosses) -> Tensor:
        """:meth:`dataprune.Pruner.loss`: the batch's loss to back-propagate, with its
        per-sample losses (``sample_losses(batch)``) recorded; return it from
        ``training_step``."""
        self._sample_losses = sample_losses
        return self._require_pruner("loss").loss(indices, batch, sample_losses)

    def record(self, indices: Tensor, losses: Tensor, valid: Tensor | None = None) -> Tensor:
        """:meth:`dataprune.Pruner.record`, for a ``training_step`` that computes the losses
        itself (a method that selects within a batch or measures left-out samples needs
        :meth:`loss`)."""
        return self._require_pruner("record").record(indices, losses, valid)

    # ---------------------------------------------------------- Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self._trainer is not None and trainer is not self._trainer:
            raise InvalidValue(
                "this DataPruning callback already served another Trainer, whose pruner has "
                "run its epochs: build a new DataPruning(...) for each Trainer (resuming from a "
                "checkpoint restores the pruner into the new one)"
            )
        self._trainer = trainer

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pruner = self._require_pruner("on_train_start")
        for optimizer in trainer.optimizers:
            pruner.attach(optimizer)  # a method's learning-rate scale, if it has one
        loader = trainer.train_dataloader
        if self._loader is None or getattr(loader, "sampler", None) is not self._loader.sampler:
            raise RuntimeError(
                "the training DataLoader does not use DataPruning's sampler: return "
                "pruning.dataloader(...) from train_dataloader(), and under DDP pass "
                "Trainer(use_distributed_sampler=False), or Lightning shards the subset a second "
                "time"
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pruner = self._require_pruner("on_train_epoch_start")
        pruner.set_epoch(trainer.current_epoch)  # Lightning did it through the sampler
        self._batches_done = 0
        metrics = {METRIC_PREFIX + k: v for k, v in pruner.epoch_metrics().items()}
        # Identical on every rank; sync_dist only keeps Lightning from warning that they are not.
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches_done += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pruner, loader = self._require_pruner("on_train_epoch_end"), self._loader
        if loader is not None:
            pruner.end_epoch(pl_module, loader, self._sample_losses or _needs_loss)

    def state_dict(self) -> dict[str, Any]:
        pruner = self.pruner
        if pruner is None or self._loader is None:
            return {}
        state = pruner.gathered_state_dict() if pruner.shard else pruner.state_dict()
        # Whether this rank finished the epoch's batches: a resume then starts the next epoch.
        batches = pruner.epoch_batches(pruner.epoch or 0, self._batch_size, self._drop_last)
        return {"pruner": state, "epoch_done": self._batches_done >= batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self._restored = state_dict
        if self.pruner is not None:  # built before the checkpoint was loaded
            self._restore()

    # ----------------------------------------------------------------- inner
    def _require_pruner(self, call: str) -> Pruner:
        if self.pruner is None:
            raise RuntimeError(
                f"{call}() before the pruner exists: return pruning.dataloader(...) from the "
                "LightningModule's train_dataloader()"
            )
        return self.pruner

    def _require_trainer(self) -> pl.Trainer:
        if self._trainer is None:
            raise RuntimeError(
                "dataloader() before the Trainer set this callback up: pass it in "
                "Trainer(callbacks=[...]) and call dataloader() from train_dataloader()"
            )
        return self._trainer

    def _uniform_batches(self) -> bool:
        """Whether every epoch has as many batches (else the loader reports no length)."""
        pruner = self._require_pruner("dataloader")
        shape = (self._batch_size, self._drop_last)
        return len({pruner.epoch_batches(e, *shape) for e in range(pruner.epochs)}) == 1

    def _build(self, trainer: pl.Trainer, num_samples: int) -> Pruner:
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise InvalidValue(
                f"Trainer(max_epochs={trainer.max_epochs}): the pruner plans whole epochs; "
                "give the Trainer a max_epochs"
            )
        self.pruner = pruner = Pruner(num_samples, epochs=trainer.max_epochs, **self.pruner_args)
        if self._restored is not None:
            self._restore()
        if pruner.epoch is None:
            # Loaders may read the sampler before Lightning's first set_epoch (workers prefetch).
            pruner.set_epoch(trainer.current_epoch)
        if trainer.max_steps == -1 and not self._uniform_batches():
            # An unsized loader: estimated_stepping_batches is then max_steps, the exact count.
            # (Epochs of as many batches need nothing: Lightning's own estimate is exact.)
            trainer.fit_loop.epoch_loop.max_steps = pruner.total_steps(
                self._batch_size, self._drop_last, accumulate=trainer.accumulate_grad_batches
            )
        return pruner

    def _restore(self) -> None:
        state, self._restored = self._restored, None
        pruner = self._require_pruner("load_state_dict")
        if state is None:
            return
        pruner.load_state_dict(state["pruner"])
        epoch = pruner.epoch
        if state["epoch_done"] and epoch is not None and epoch + 1 < pruner.epochs:
            pruner.set_epoch(epoch + 1)


def _needs_loss(batch: Any) -> Tensor:
    raise InvalidValue(
        "this method measures samples it left out when an epoch ends, with the per-sample loss "
        "function that training_step passes to pruning.loss(index, batch, sample_losses); "
        "return pruning.loss(...) instead of pruning.record(...)"
    )
