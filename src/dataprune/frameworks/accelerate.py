"""Dynamic data pruning in a plain Accelerate loop (``pip install 'dataprune[hf]'``).

::

    pruner = dataprune.Pruner(len(train_set), method="ucb", prune=0.5, epochs=E)
    loader = dataloader(accelerator, pruner, train_set, batch_size=B)  # prepared
    model, opt = accelerator.prepare(model, opt)
    accelerator.register_for_checkpointing(pruner)  # save_state/load_state keep it
    for epoch in range(E):
        loader.set_epoch(epoch)  # forwarded to the pruner
        for index, (x, y) in loader:
            loss = pruner.record(index, F.cross_entropy(model(x), y, reduction="none"))
            accelerator.backward(loss)
            ...

Which way round the sharding goes: ``accelerator.prepare`` shards a map-style loader by
batches (rank r takes batches r, r + W, ...), whatever its sampler. The sampler must then yield
the whole subset, in an order every rank shares (``pruner.sampler(num_replicas=1)``): a sampler
sharded per rank as well would leave each rank ``1 / W`` of its share. Each rank then takes
``pruner.total_steps(B)`` steps, as with ``DistributedSampler``.

Call ``loader.set_epoch(epoch)``, not only ``pruner.set_epoch``: the prepared loader keeps its
own epoch counter, sets it on the sampler each time it is iterated, and after ``load_state``
would start again from 0.

``even_batches`` (Accelerate's default) keeps every rank at the same number of full batches:
when the subset is not a multiple of ``W x B`` it completes the last round with samples from the
start of the epoch, which train twice (``record`` merges the copies). ``even_batches=False``
would leave ranks with different numbers of steps, which a DDP backward does not survive.
``split_batches=True`` (one batch of ``B`` cut into ``W`` pieces) is refused, since ``B`` would
no longer be the per-rank batch that ``total_steps`` counts.

A method that keeps steps (``peek`` with ``steps=True``) gets a loader on
``pruner.batch_sampler``: a pruned epoch has as many batches as a full one, smaller ones, which
Accelerate shards as they come (the batch sampler's ``batch_size`` is None).
"""

from __future__ import annotations

from typing import Any

from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from .. import IndexedDataset, IndexedDictDataset, Pruner
from ..errors import InvalidValue


def dataloader(
    accelerator: Accelerator,
    pruner: Pruner,
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    **loader_options: Any,
) -> DataLoader:
    """A training DataLoader over the pruner's subset, already ``accelerator.prepare``-d.

    ``dataset`` is wrapped in :class:`dataprune.IndexedDataset` unless it already is one (or an
    :class:`dataprune.IndexedDictDataset`); ``loader_options`` go to the DataLoader.
    """
    if accelerator.split_batches:
        raise InvalidValue(
            "Accelerator(split_batches=True) cuts each batch across ranks; dataprune counts "
            "per-rank batches: build the Accelerator with split_batches=False (its default)"
        )
    if not isinstance(dataset, (IndexedDataset, IndexedDictDataset)):
        dataset = IndexedDataset(dataset)
    if pruner.policy.keeps_steps():  # smaller batches in pruned epochs: a batch sampler
        batches = pruner.batch_sampler(
            batch_size,
            shuffle=shuffle,
            drop_last=loader_options.pop("drop_last", False),
            num_replicas=1,  # Accelerate shards
            rank=0,
        )
        loader = DataLoader(dataset, batch_sampler=batches, **loader_options)
    else:
        sampler = pruner.sampler(shuffle=shuffle, num_replicas=1, rank=0)  # Accelerate shards
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, **loader_options)
    return accelerator.prepare(loader)
