"""Dynamic data pruning in the Hugging Face Trainer (``pip install 'dataprune[hf]'``).

::

    trainer = DataPruningTrainer(
        model=model,
        args=TrainingArguments("out", num_train_epochs=4, remove_unused_columns=False),
        train_dataset=train_set,  # items are dicts with "labels"
        data_collator=collate,
        pruning={"method": "ucb", "prune": 0.5},
    )
    trainer.train()  # or trainer.train(resume_from_checkpoint=True)

A documented subclass, and nothing in transformers patched:

- ``_get_train_sampler`` returns the pruner's sampler over the whole subset. Accelerate shards
  the Trainer's loader by batches (rank r takes batches r, r + W, ...), so the sampler must not
  shard it too; the order comes from ``(seed, epoch)`` and is the same on every rank.
- ``compute_loss`` takes each sample's loss (the mean over its tokens for a token-level head,
  :func:`dataprune.sequence_losses`) and records it. The returned loss is normalised over the
  samples of the whole gradient-accumulation window (``get_batch_samples`` counts them), so a
  shorter last window is weighed by its samples (``loss_is_scaled_for_ga``: transformers 5.20).
- ``max_steps``, the LR schedule and each epoch's steps come from the pruner: the Trainer
  would size every epoch like the first, so the subclass gives its loop each epoch's own
  length (warm-up and anneal epochs, prune-rate schedules), and a resumed run finds its epoch
  and step from them. ``train_samples_per_second`` counts the samples trained.
- A method that keeps steps (``peek`` with ``steps=True``) trains on a loader built on
  ``Pruner.batch_sampler``: each pruned epoch has a full epoch's steps, on smaller batches.
- Every method runs: ``compute_loss`` goes through :meth:`dataprune.Pruner.loss` (a method's
  in-batch step), and each epoch ends with :meth:`dataprune.Pruner.end_epoch`.
- A run whose losses were mostly NaN or inf in an epoch stops with an error, as the harness
  does; fewer are logged each epoch (``dataprune/nonfinite_losses``).
- Checkpoints hold the pruner (``dataprune_pruner.pt``), and ``train(resume_from_checkpoint=...)``
  restores it: the run continues with the same selections, from an epoch's end or mid-epoch.
- Each epoch logs ``dataprune/*`` figures through ``Trainer.log``.

Accelerate's ``even_batches`` (on by default) completes the last round of batches from the
start of the epoch when the subset is not a multiple of ``W x batch size``, as
``DistributedSampler`` pads; those few samples are trained twice.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import Trainer, TrainerCallback
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, seed_worker

from .. import IndexedCollator, IndexedDictDataset, Pruner
from ..errors import DataPruneError, InvalidValue
from ..losses import counted_tokens, sequence_losses

PRUNER_FILE = "dataprune_pruner.pt"
INDEX_KEY = "index"
IGNORE_INDEX = -100  # the label Hugging Face models ignore


class DataPruningTrainer(Trainer):
    """A ``transformers.Trainer`` that trains each epoch on the subset a Pruner picks.

    Args:
        *args, **kwargs: the Trainer's. ``args.num_train_epochs`` must be a whole number and
            ``args.max_steps`` unset (the pruner sizes the run); ``args.remove_unused_columns``
            must be False (the Trainer would drop the ``"index"`` key the loss needs).
        pruning: :class:`dataprune.Pruner` arguments (``method``, ``prune``, ...; ``seed``
            defaults to ``args.seed``).
        shuffle: order each epoch's subset by ``(seed, epoch)`` (else by index).
        causal: whether position t predicts label t + 1 (a causal LM). Default: as the Trainer
            decides for its own loss, from the model's class.

    ``train_dataset`` items are dicts (``input_ids``, ``labels``, ...); the Trainer adds their
    index and keeps it through ``data_collator``. The pruner is :attr:`pruner`.
    """

    loss_is_scaled_for_ga = True  # compute_loss normalises over the accumulation window

    def __init__(
        self,
        *args: Any,
        pruning: Mapping[str, Any] | None = None,
        shuffle: bool = True,
        causal: bool | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if self.train_dataset is None:
            raise InvalidValue("DataPruningTrainer needs a train_dataset to prune")
        if self.args.remove_unused_columns:
            raise InvalidValue(
                "DataPruningTrainer needs TrainingArguments(remove_unused_columns=False): "
                f"otherwise the Trainer drops the {INDEX_KEY!r} key that record() needs"
            )
        epochs = self.args.num_train_epochs
        if self.args.max_steps > 0 or epochs != int(epochs):
            raise InvalidValue(
                f"DataPruningTrainer sizes the run from whole epochs: set num_train_epochs to a "
                f"whole number (got {epochs}) and leave max_steps unset (got "
                f"{self.args.max_steps})"
            )
        pruning = {"seed": self.args.seed, **(pruning or {})}
        for taken, source in (("epochs", "num_train_epochs"), ("num_samples", "train_dataset")):
            if taken in pruning:
                raise InvalidValue(
                    f"pruning={{{taken!r}: ...}}: the Trainer takes {taken} from {source}; "
                    "leave it out of pruning"
                )
        size = len(self.train_dataset)  # type: ignore[arg-type]  # map-style: it has one
        self.pruner = Pruner(size, epochs=int(epochs), **pruning)
        self.shuffle = shuffle
        model_class = type(self.accelerator.unwrap_model(self.model)).__name__
        self.causal = model_class in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
        if causal is not None:
            self.causal = causal
        if not isinstance(self.train_dataset, IndexedDictDataset):
            self.train_dataset = IndexedDictDataset(self.train_dataset, INDEX_KEY)
        self.data_collator = IndexedCollator(self.data_collator, INDEX_KEY)
        self.add_callback(_PrunerCallback(self))

    # ----------------------------------------------------------- Trainer hooks
    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler:
        # The whole subset: Accelerate shards the loader by batches.
        return self.pruner.sampler(shuffle=self.shuffle, num_replicas=1, rank=0)

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """The Trainer's loader, but for a method that keeps steps (``peek`` with
        ``steps=True``) one on the pruner's batch sampler, whose pruned epochs have a full
        epoch's batches, smaller ones; Accelerate shards it by batches as it does the
        Trainer's."""
        if not self.pruner.policy.keeps_steps():
            return super().get_train_dataloader()
        args = self.args
        batches = self.pruner.batch_sampler(
            self._train_batch_size,
            shuffle=self.shuffle,
            drop_last=args.dataloader_drop_last,
            num_replicas=1,
            rank=0,
        )
        workers = args.dataloader_num_workers
        loader = torch.utils.data.DataLoader(
            self.train_dataset,  # type: ignore[arg-type]  # map-style, checked at init
            batch_sampler=batches,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            worker_init_fn=functools.partial(
                seed_worker, num_workers=workers, rank=args.process_index
            ),
        )
        return self.accelerator.prepare(loader)

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, Tensor | None]:
        """The next ``num_batches`` batches and how many samples with a loss they hold."""
        batches = list(itertools.islice(epoch_iterator, num_batches))
        if not batches:
            return batches, None
        return batches, torch.stack([self._valid(batch).sum() for batch in batches]).sum().to(
            device
        )

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ):
        """Per-sample losses into ``pruner.record``; elsewhere (evaluation) the Trainer's own."""
        if INDEX_KEY not in inputs:
            if model.training:
                raise KeyError(
                    f"a training batch has no {INDEX_KEY!r} key: a custom data_collator or "
                    "get_train_dataloader dropped it"
                )
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs:
            raise InvalidValue(
                "compute_loss(return_outputs=True) on a training batch: the pruner returns the "
                "loss alone (a method may forward the batch twice)"
            )
        inputs = dict(inputs)
        index = inputs.pop(INDEX_KEY)
        loss = self.pruner.loss(index, inputs, self._losses_of(model))  # this batch's mean
        if num_items_in_batch is not None:  # over the accumulation window's samples instead
            valid = self._valid(inputs).sum()
            loss = loss * valid / torch.as_tensor(num_items_in_batch).clamp_min(1)
        return loss

    def _losses_of(self, model: torch.nn.Module):
        """The per-sample loss function of ``model`` over a batch of the Trainer's inputs."""

        def losses(batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
            batch = dict(batch)
            labels = batch.pop("labels")
            return self.sample_losses(model(**batch), labels, batch)

        return losses

    def sample_losses(
        self, outputs: Any, labels: Tensor, inputs: Mapping[str, Any]
    ) -> tuple[Tensor, Tensor]:
        """Each sample's loss and whether it has one; override for other heads.

        Logits ``(batch, classes)`` against labels ``(batch,)``: cross-entropy. Logits
        ``(batch, length, vocab)`` against labels ``(batch, length)``: the mean over the
        sequence's counted tokens (:func:`dataprune.sequence_losses`).
        """
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        if logits.dim() == 2:
            losses = F.cross_entropy(
                logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none"
            )
            return losses, labels != IGNORE_INDEX
        return sequence_losses(
            logits,
            labels,
            ignore_index=IGNORE_INDEX,
            attention_mask=inputs.get("attention_mask"),
            causal=self.causal,
        )

    def train(  # type: ignore[override]  # the Trainer's arguments, passed on
        self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any
    ) -> Any:
        """``Trainer.train``; resuming from a checkpoint restores the pruner too."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise InvalidValue(f"no checkpoint found in output_dir={self.args.output_dir!r}")
        if isinstance(resume_from_checkpoint, str):
            path = os.path.join(resume_from_checkpoint, PRUNER_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{path} is missing: the checkpoint was not saved by a DataPruningTrainer"
                )
            self.pruner.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    # ------------------------------------- the Trainer's loop, sized by the pruner
    def set_initial_training_values(self, args, dataloader):
        """The Trainer's run sizes, with the pruned run's steps and samples."""
        values = list(super().set_initial_training_values(args, dataloader))
        values[3] = sum(self.pruner.budgets)  # num_train_samples: what trains, for speed
        values[6] = self.pruner.total_steps(*self._step_shape())  # max_steps
        return tuple(values)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, *args, **kwargs):
        """The Trainer's state; resuming, the epoch and step found from each epoch's length."""
        epochs_trained, steps_in_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, *args, **kwargs
        )
        if self.state.global_step == 0:
            return epochs_trained, steps_in_epoch
        step, epoch = self.state.global_step, 0
        while epoch < self.pruner.epochs and step >= self._epoch_steps(epoch):
            step, epoch = step - self._epoch_steps(epoch), epoch + 1
        skipped = 0 if self.args.ignore_data_skip else step * self.args.gradient_accumulation_steps
        return epoch, skipped

    def _run_epoch(self, *args, epoch, steps_in_epoch, num_update_steps_per_epoch, **kwargs):
        """One epoch of the Trainer's loop, at this epoch's own length."""
        batch_size, drop_last, accumulate = self._step_shape()
        return super()._run_epoch(
            *args,
            epoch=epoch,
            steps_in_epoch=self.pruner.epoch_steps(epoch, batch_size, drop_last),
            num_update_steps_per_epoch=self._epoch_steps(epoch),
            **kwargs,
        )

    def _step_shape(self) -> tuple[int, bool, int]:
        args = self.args
        return (
            args.per_device_train_batch_size,
            args.dataloader_drop_last,
            args.gradient_accumulation_steps,
        )

    def _epoch_steps(self, epoch: int) -> int:
        return self.pruner.epoch_steps(epoch, *self._step_shape())

    # ------------------------------------------------------------------ inner
    def _valid(self, batch: Mapping[str, Any]) -> Tensor:
        labels = batch["labels"]
        if labels.dim() == 1:
            return labels != IGNORE_INDEX
        mask = counted_tokens(labels, IGNORE_INDEX, batch.get("attention_mask"), causal=self.causal)
        return mask.any(dim=1)


class TrainingDiverged(DataPruneError):
    """Most of an epoch's training losses were NaN or inf."""


class _PrunerCallback(TrainerCallback):
    """Selects each epoch's subset, ends it, logs its figures, and saves the pruner."""

    def __init__(self, trainer: DataPruningTrainer):
        self.trainer = trainer
        self._nonfinite = 0  # NaN and inf losses before this epoch
        self._trained = 0  # samples back-propagated before this epoch

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None:
            self.trainer.pruner.attach(optimizer)  # a method's learning-rate scale, if any

    def on_epoch_begin(self, args, state, control, **kwargs):
        pruner = self.trainer.pruner
        pruner.set_epoch(int(state.epoch or 0))  # Accelerate forwards it too; it is idempotent
        summary = pruner.summary()
        self._nonfinite = summary["nonfinite_losses_skipped"]
        self._trained = summary["samples_backpropagated"]
        self.trainer.log({f"dataprune/{k}": v for k, v in pruner.epoch_metrics().items()})

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        trainer, pruner = self.trainer, self.trainer.pruner
        loader = torch.utils.data.DataLoader(
            trainer.train_dataset,
            batch_size=args.per_device_train_batch_size,
            collate_fn=trainer.data_collator,
            num_workers=args.dataloader_num_workers,
        )
        pruner.end_epoch(model, loader, trainer._losses_of(model))
        summary = pruner.summary()
        nonfinite = summary["nonfinite_losses_skipped"] - self._nonfinite
        trained = summary["samples_backpropagated"] - self._trained
        trainer.log({"dataprune/nonfinite_losses": float(nonfinite)})
        if nonfinite > trained / 2:
            raise TrainingDiverged(
                f"epoch {pruner.epoch}: {nonfinite:,} of {trained:,} training losses were NaN "
                "or inf: training diverged, so the run stops (the last checkpoint holds an "
                "earlier state). Lower the learning rate and train again"
            )

    def on_save(self, args, state, control, **kwargs):
        pruner = self.trainer.pruner
        pruner_state = pruner.gathered_state_dict() if pruner.shard else pruner.state_dict()
        if not state.is_world_process_zero:
            return
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        path = os.path.join(folder, PRUNER_FILE)
        torch.save(pruner_state, path + ".tmp")
        os.replace(path + ".tmp", path)  # a crash never leaves half a file under the real name
