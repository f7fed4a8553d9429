"""MosaicML Streaming (MDS shards), read through ``pruner.sampler()``.

A ``streaming.StreamingDataset`` is indexable by the library's own global sample id (its
position across the shards listed in ``index.json``): ``dataset[i]`` reads sample ``i`` alone,
downloading its shard first when it is remote. :class:`MosaicIndexed` exposes that id as a
map-style dataset, so ``pruner.sampler()`` can choose which samples are read: a pruned sample is
never read nor decoded. The sampler then does what the library's ``__iter__`` otherwise does:
it splits the epoch across ranks (``DistributedSampler``'s rule, equal counts) and shuffles it
from ``(seed, epoch)``, identically on every rank; the DataLoader hands its batches to the
workers. The library's own partition, shuffle and stream weighting belong to its ``__iter__``,
which this path does not call, so no sample is split or shuffled twice.

Needs ``pip install 'dataprune[mosaic]'``. ``import streaming`` imports torchvision (for
``streaming.vision``) and transformers below 5; dataprune itself uses neither.

    from streaming import StreamingDataset
    from dataprune.formats.images import decode_sample
    from dataprune.formats.mosaic import MosaicIndexed

    data = MosaicIndexed(StreamingDataset(local="shards/mds", batch_size=B), decode_sample)
    pruner = dataprune.Pruner(len(data), "epsilon-greedy", prune=0.5, epochs=E)
    loader = DataLoader(data, batch_size=B, sampler=pruner.sampler(), num_workers=4)

and the loop of the README's "Large datasets" section.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from streaming import MDSWriter, StreamingDataset

from .images import SHARD_BYTES, IndexedStore, Sample

MDS_COLUMNS = {"index": "int64", "label": "int64", "png": "bytes"}


class MosaicIndexed(IndexedStore):
    """``(index, transform(dataset[index]))`` for every global sample id of an MDS dataset.

    ``len()`` is the dataset's total sample count (``dataset.num_samples``), not the per-rank
    length that ``len(dataset)`` gives under torch.distributed.
    """

    def __init__(self, dataset: StreamingDataset, transform: Callable[[Any], Any] | None = None):
        super().__init__(dataset, transform)
        streams = getattr(dataset, "streams", None) or [None]
        self.where = str(getattr(streams[0], "local", None) or "the MDS dataset")  # for errors

    def __len__(self) -> int:
        return self.dataset.num_samples


def write_mds(
    out_dir: str | os.PathLike[str], samples: Iterable[Sample], shard_bytes: int = SHARD_BYTES
) -> Path:
    """Write ``(index, png, label)`` samples as MDS shards with the library's ``MDSWriter``.

    Columns ``index`` (int64), ``label`` (int64) and ``png`` (the encoded bytes, decoded by the
    reader's transform, not by the library), in shards of about ``shard_bytes``. Samples keep
    their order, so the library's sample
    id equals ``index``. Returns ``out_dir``.
    """
    with MDSWriter(out=str(out_dir), columns=MDS_COLUMNS, size_limit=shard_bytes) as writer:
        for index, png, label in samples:
            writer.write({"index": index, "label": label, "png": png})
    return Path(out_dir)
