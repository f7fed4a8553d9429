"""LitData optimized datasets (``litdata.optimize`` chunks), read through ``pruner.sampler()``.

``litdata.StreamingDataset`` is indexable by the library's own global sample index (chunks in
``index.json`` order, after any ``subsample``): ``dataset[i]`` reads sample ``i`` alone.
:class:`LitDataIndexed` exposes that index as a map-style dataset, so ``pruner.sampler()``
chooses which samples are read: a pruned sample is never read nor decoded. The sampler then
does what the library's ``__iter__`` otherwise does: it splits the epoch across ranks
(``DistributedSampler``'s rule, equal counts) and shuffles it from ``(seed, epoch)``,
identically on every rank; the DataLoader hands its batches to the workers. The library's own
chunk assignment to ranks and workers and its ``shuffle`` belong to its ``__iter__``, which
this path does not call, so no sample is split or shuffled twice.

Needs ``pip install 'dataprune[litdata]'``. litdata's metadata asks for torchvision, but it
imports torchvision only to encode and decode video: reading and writing bytes works without it.

    import litdata
    from dataprune.formats.images import decode_sample
    from dataprune.formats.litdata import LitDataIndexed

    data = LitDataIndexed(litdata.StreamingDataset("shards/litdata", batch_decode=0), decode_sample)
    pruner = dataprune.Pruner(len(data), "epsilon-greedy", prune=0.5, epochs=E)
    loader = DataLoader(data, batch_size=B, sampler=pruner.sampler(), num_workers=4)

and the loop of the README's "Large datasets" section.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import litdata

from ..errors import InvalidValue
from .images import SHARD_BYTES, IndexedStore, Sample


class LitDataIndexed(IndexedStore):
    """``(index, transform(dataset[index]))`` for every global sample index of a LitData set.

    ``len()`` counts every sample the dataset holds (its regions of interest), not the
    per-rank, per-worker length that ``len(dataset)`` gives. The dataset must be made with
    ``batch_decode=0``: otherwise each read deserializes a window of neighbouring samples,
    pruned ones included.
    """

    def __init__(
        self, dataset: litdata.StreamingDataset, transform: Callable[[Any], Any] | None = None
    ):
        if dataset.batch_decode not in (0, False):
            raise InvalidValue(
                f"the litdata dataset has batch_decode={dataset.batch_decode!r}, so reading one "
                "sample deserializes its neighbours too, pruned or not: make it with "
                "litdata.StreamingDataset(..., batch_decode=0)"
            )
        super().__init__(dataset, transform)
        self.where = str(dataset.input_dir.path or dataset.input_dir.url)
        self.num_samples = sum(end - start for start, end in dataset.region_of_interest)

    def __len__(self) -> int:
        return self.num_samples


def _as_item(sample: Sample) -> dict[str, Any]:
    index, png, label = sample
    return {"index": index, "label": label, "png": png}


def write_litdata(
    out_dir: str | os.PathLike[str], samples: Iterable[Sample], shard_bytes: int = SHARD_BYTES
) -> Path:
    """Write ``(index, png, label)`` samples with ``litdata.optimize`` (one worker, in order).

    Fields ``index``, ``label`` and ``png`` (the encoded bytes, decoded by the reader's
    transform), in chunks of about ``shard_bytes``. One worker keeps the input order, so the
    library's index equals ``index``. The worker is forked (no ``if __name__ == "__main__"``
    guard needed); ``optimize`` sets the process-wide multiprocessing start method, which is put
    back afterwards. Returns ``out_dir``.
    """
    start_method = multiprocessing.get_start_method(allow_none=True)
    try:
        litdata.optimize(
            fn=_as_item,
            inputs=list(samples),
            output_dir=str(out_dir),
            chunk_bytes=shard_bytes,
            num_workers=1,
            mode="overwrite",
            start_method="fork",
            verbose=False,
        )
    finally:
        multiprocessing.set_start_method(start_method, force=True)
    return Path(out_dir)
