"""WebDataset tar shards: pruned samples are dropped by member name, before they are extracted.

A tar shard is read sequentially, so no sampler can jump to the kept samples. Instead
:class:`PrunedWebDataset` builds the library's pipeline with a ``select_files`` filter in
``tarfile_to_samples``: the tar reader skips each member whose sample index is not in this
epoch's subset, so its bytes are never extracted, grouped into a sample or decoded (the reader
still streams past them: tar I/O is not saved, decoding is). The index of a sample is read from
its key, the member name before the first dot (``00000042.png`` is sample 42), as
:func:`write_webdataset` writes it; pass ``index_of`` for another naming.

Shards are split across ranks (``urls[rank::world_size]``) and then across DataLoader workers
(``webdataset.split_by_worker``); their order is shuffled from ``(seed, epoch)``, identically
on every rank. In one process every kept sample is read exactly once per epoch: the budget is
the pruner's. Under torch.distributed, ``pruner.record`` is a collective, so every rank must
take the same number of steps, while each holds only the kept samples of its own shards. Each
DataLoader worker of each rank then yields a fixed quota, ``epoch_size // (world_size *
num_workers)`` samples: a worker stops once it reaches it, and one that runs short reads its
shards' kept samples again. The realised budget is :meth:`PrunedWebDataset.epoch_samples`
(at most ``world_size * num_workers - 1`` below the pruner's, and its samples can differ from
the chosen subset where shards hold uneven shares of it); ``pruner.summary()
["samples_recorded"]`` reports what this rank recorded.

Tars do not hold their sample count: :func:`scan_shards` reads it from their headers, checking
every member, before a pruner is sized by it. A sample that cannot be read or decoded raises an
error naming its shard and sample.

Use it with ``persistent_workers=False`` (the default): each epoch's workers must start after
``pruner.set_epoch``, and they read the subset from their copy of the pruner.

Needs ``pip install 'dataprune[webdataset]'`` (no torchvision).

    from dataprune.formats.images import decode_sample
    from dataprune.formats.webdataset import PrunedWebDataset

    pruner = dataprune.Pruner(N, "epsilon-greedy", prune=0.5, epochs=E)
    data = PrunedWebDataset(sorted(glob.glob("shards/wds/*.tar")), pruner, decode_sample)
    loader = DataLoader(data, batch_size=B, num_workers=4)
    for epoch in range(E):
        pruner.set_epoch(epoch)
        for idx, (x, y) in loader:
            loss = pruner.record(idx, F.cross_entropy(model(x.float()), y, reduction="none"))
"""

from __future__ import annotations

import functools
import itertools
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from ..distributed import world
from ..errors import DataPruneError, InvalidValue
from ..pruner import Pruner
from .images import INDEX_FORMAT, SHARD_BYTES, Sample, located


def key_index(name: str) -> int:
    """The sample index in a member name written by :func:`write_webdataset` (``42`` for
    ``dir/00000042.png``)."""
    return int(os.path.basename(name).split(".", 1)[0])


def scan_shards(
    urls: Sequence[str | os.PathLike[str]], index_of: Callable[[str], int] = key_index
) -> int:
    """The number of samples N in local tar shards, from their headers alone, checking each member.

    Every member must be a regular file whose data lies within the file, with a relative name
    that stays inside its folder and gives a sample index (``index_of``); a sample's members must
    be consecutive, and the indices must run 0 .. N-1, each sample in one shard only (a shard
    copied under a second name is refused). Raises :class:`~dataprune.errors.InvalidValue`
    naming the shard and the member. Reads one 512-byte header a member and seeks past the data,
    so it costs a small fraction of one epoch's reading; memory is 8 bytes a sample.
    """
    if not urls:
        raise InvalidValue("urls is empty: pass the list of tar shards")
    parts = [_shard_indices(str(url), index_of) for url in urls]
    owners = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    indices = np.concatenate(parts)
    order = np.argsort(indices, kind="stable")
    indices, owners = indices[order], owners[order]
    repeated = np.flatnonzero(indices[1:] == indices[:-1])
    if len(repeated):
        at = repeated[0]
        first, second = urls[owners[at]], urls[owners[at + 1]]
        raise InvalidValue(
            f"sample {indices[at]} is in both {first} and {second} ({len(repeated)} samples held "
            "twice: a shard copied under another name?): remove the copies"
        )
    if len(indices) == 0:
        raise InvalidValue(f"the {len(urls)} shards hold no samples: write them again")
    if indices[-1] != len(indices) - 1:
        missing = int(np.flatnonzero(indices != np.arange(len(indices)))[0])
        raise InvalidValue(
            f"the {len(urls)} shards hold {len(indices)} samples with indices up to "
            f"{indices[-1]}, but sample {missing} is in none of them (a shard missing?): the "
            "indices must run 0 .. N-1"
        )
    return len(indices)


def _shard_indices(url: str, index_of: Callable[[str], int]) -> np.ndarray:
    """The sample indices of one local tar shard, one a sample, in order (see scan_shards)."""
    fix = "write the shard again"
    keys = []
    try:
        size = os.stat(url).st_size
        with tarfile.open(url, mode="r:") as tar:
            for member in tar:  # headers only: tarfile seeks past each member's data
                name = member.name
                where = f"{url}: member {name!r}"
                if not member.isreg():
                    raise InvalidValue(f"{where} is not a regular file (a link?): {fix}")
                if name.startswith("/") or ".." in name.split("/"):
                    raise InvalidValue(f"{where} names a path outside the shard's folder: {fix}")
                if member.offset_data + member.size > size:
                    raise InvalidValue(f"{where} is cut short: the file is truncated; {fix}")
                try:
                    index = index_of(name)
                except ValueError:
                    raise InvalidValue(
                        f"{where} is not named by a sample index (such as 00000042.png): {fix}"
                    ) from None
                if index < 0:
                    raise InvalidValue(f"{where} gives a negative sample index: {fix}")
                keys.append(index)
            end = tar.offset  # where reading stopped: a tar ends with zero blocks there
        with open(url, "rb") as file:
            file.seek(end)
            if file.read(512) != bytes(512):
                raise InvalidValue(f"{url} ends within a member: it is truncated; {fix}")
    except tarfile.TarError as error:
        raise InvalidValue(f"{url}: not a readable tar file ({error}): {fix}") from error
    samples = np.asarray(keys, dtype=np.int64)
    samples = samples[np.r_[True, samples[1:] != samples[:-1]]] if len(samples) else samples
    if len(np.unique(samples)) < len(samples):
        again = samples[np.flatnonzero(np.bincount(samples) > 1)[0]] if len(samples) else 0
        raise InvalidValue(
            f"{url}: the members of sample {again} are not consecutive (or repeat it): {fix}"
        )
    return samples


class PrunedWebDataset(IterableDataset):
    """Yields ``(index, transform(sample))`` for this rank's and worker's kept samples.

    Args:
        urls: the tar shards (paths or any URL WebDataset opens), the same list on every rank.
        pruner: the run's pruner; ``pruner.set_epoch`` must come before each epoch's iteration.
        transform: applied to each kept sample dict (``__key__`` plus one entry per member
            extension, e.g. ``png`` and ``label`` bytes), in the DataLoader workers.
        index_of: member name -> global sample index in ``[0, pruner.num_samples)``.
        shuffle_shards: shuffle the shard order each epoch from ``(pruner.seed, epoch)``.
        shuffle_buffer: if > 0, shuffle kept samples through a buffer of this many samples,
            seeded from ``(pruner.seed, epoch, rank, worker)``.
        rank, world_size: default to ``dataprune.distributed.world()`` when the dataset is made.
    """

    def __init__(
        self,
        urls: Sequence[str],
        pruner: Pruner,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        index_of: Callable[[str], int] = key_index,
        shuffle_shards: bool = True,
        shuffle_buffer: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if not urls:
            raise InvalidValue("urls is empty: pass the list of tar shards")
        if shuffle_buffer < 0:
            raise InvalidValue(f"shuffle_buffer must be >= 0 samples, got {shuffle_buffer}")
        default_rank, default_world = world()
        self.urls = list(urls)
        self.pruner = pruner
        self.transform = transform
        self.index_of = index_of
        self.shuffle_shards = shuffle_shards
        self.shuffle_buffer = shuffle_buffer
        self.rank = default_rank if rank is None else rank
        self._kept: tuple[int, np.ndarray] | None = None  # (epoch, mask): snapshot_subset()
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise InvalidValue(f"rank={self.rank} must be in [0, world_size={self.world_size})")

    def shards(self) -> list[str]:
        """This rank's shards for the current epoch, in reading order (before the worker split)."""
        epoch = self._epoch()
        urls = self.urls
        if self.shuffle_shards:
            order = np.random.default_rng([self.pruner.seed, epoch, 0x5744]).permutation(len(urls))
            urls = [urls[i] for i in order]
        return urls[self.rank :: self.world_size]

    def epoch_samples(self, num_workers: int) -> int:
        """Samples read in the current epoch over all ranks (the realised budget) with a
        DataLoader of ``num_workers`` workers; the pruner's ``epoch_size`` in one process."""
        size = self.pruner.epoch_size(self._epoch())
        if self.world_size == 1:
            return size
        return self._quota(num_workers) * self.world_size * max(num_workers, 1)

    def _quota(self, num_workers: int) -> int:
        """Samples each DataLoader worker of each rank yields under torch.distributed."""
        readers = self.world_size * max(num_workers, 1)
        if len(self.urls) < readers:
            raise InvalidValue(
                f"{len(self.urls)} shards cannot feed world_size={self.world_size} ranks x "
                f"num_workers={num_workers} DataLoader workers: write at least {readers} shards"
            )
        return self.pruner.epoch_size(self._epoch()) // readers

    def _epoch(self) -> int:
        if self.pruner.epoch is None:
            raise RuntimeError(
                "no subset yet: call pruner.set_epoch(epoch) at the start of each epoch, before "
                "iterating the DataLoader"
            )
        return self.pruner.epoch

    def snapshot_subset(self) -> None:
        """Copy this epoch's subset into host memory, here in the main process.

        DataLoader workers started afterwards read that copy instead of the pruner's tensor,
        which a forked worker cannot read where it is in GPU memory (the pruner's statistics
        move to the losses' device). So on a GPU, call it after each ``pruner.set_epoch``,
        before iterating the DataLoader.
        """
        kept = np.zeros(self.pruner.num_samples, dtype=bool)
        kept[self.pruner.indices().cpu().numpy()] = True
        self._kept = (self._epoch(), kept)

    def _kept_mask(self) -> np.ndarray:
        if self._kept is None or self._kept[0] != self._epoch():
            self.snapshot_subset()
        assert self._kept is not None
        return self._kept[1]

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        epoch = self._epoch()
        kept = self._kept_mask()
        index_of = self.index_of

        def keep_member(name: str) -> bool:
            try:
                index = index_of(name)
            except ValueError:
                raise InvalidValue(f"member {name!r} is not named by a sample index") from None
            if not 0 <= index < len(kept):
                raise InvalidValue(
                    f"member {name!r} is sample {index}, outside the pruner's [0, {len(kept)})"
                )
            return bool(kept[index])

        # a callable, not a generator: _fill reads the shards again when they run short
        urls = list(wds.split_by_worker(self.shards()))
        stages: list[Any] = [functools.partial(_read_shards, urls, keep_member)]
        if self.shuffle_buffer:
            _, _, worker, _ = wds.utils.pytorch_worker_info()
            seed = hash((self.pruner.seed, epoch, self.rank, worker))
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, seed=seed))
        pipeline = wds.DataPipeline(*stages)
        samples: Iterable[dict[str, Any]] = pipeline
        if self.world_size > 1:
            info = get_worker_info()
            samples = self._fill(pipeline, self._quota(0 if info is None else info.num_workers))
        for sample in samples:
            index = index_of(sample["__key__"])
            if self.transform is None:
                yield index, sample
                continue
            try:
                item = self.transform(sample)
            except DataPruneError as error:
                where = f"{sample['__url__']}: sample {sample['__key__']}"
                raise located(error, where, "write the shard again") from error
            yield index, item

    @staticmethod
    def _fill(pipeline: Iterable[dict[str, Any]], quota: int) -> Iterator[dict[str, Any]]:
        """Exactly ``quota`` samples: the first ones, then passes again while short."""
        count = 0
        while count < quota:
            before = count
            for sample in itertools.islice(pipeline, quota - count):
                count += 1
                yield sample
            if count == before:
                raise RuntimeError(
                    "a DataLoader worker's shards hold none of this epoch's kept samples, so it "
                    "cannot yield its share: write more, smaller shards"
                )


def _read_shards(
    urls: Iterable[str], select_files: Callable[[str], bool]
) -> Iterator[dict[str, Any]]:
    """WebDataset's samples of each shard in turn; an error names the shard it arose in."""
    for url in urls:
        try:
            yield from wds.tarfile_to_samples(select_files=select_files)([{"url": url}])
        except Exception as error:  # noqa: BLE001 - a bad tar fails in many ways, in the library
            # webdataset appends " @ <stream>" to the message and more to the arguments
            text = str(error.args[0]) if error.args else ""
            text = text.rpartition(" @ ")[0] or text
            if isinstance(error, DataPruneError):  # from select_files: a member's name
                raise type(error)(f"{url}: {text}; write the shard again") from error
            raise InvalidValue(
                f"{url}: not a readable tar shard ({type(error).__name__}: {text}); write it again"
            ) from error


def write_webdataset(
    out_dir: str | os.PathLike[str], samples: Iterable[Sample], shard_bytes: int = SHARD_BYTES
) -> list[Path]:
    """Write ``(index, png, label)`` samples as tar shards with ``webdataset.ShardWriter``.

    Each sample is two members, ``<index>.png`` and ``<index>.label`` (decimal text), with the
    zero-padded index as key, in shards of at most ``shard_bytes``. Returns the shard paths in
    order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pattern = str(out / "shard-%06d.tar")
    # mtime=0: reproducible shards, and plain ustar headers (a float mtime adds a pax header)
    with wds.ShardWriter(
        pattern, maxcount=1 << 40, maxsize=shard_bytes, verbose=0, mtime=0
    ) as writer:
        for index, png, label in samples:
            writer.write({"__key__": f"{index:{INDEX_FORMAT}}", "png": png, "label": str(label)})
    return sorted(out.glob("shard-*.tar"))
