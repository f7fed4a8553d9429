"""Training data on disk, read by DataLoader workers: an image folder or a streaming format.

A data folder (``--data-path``) holds two splits, ``train/`` and ``test/``, in one format:

- an image folder, one sub-folder per class (``train/<class>/<image>.png``, PNG or JPEG);
- or a folder written by ``dataprune prepare`` in any format of
  :data:`dataprune.formats.FORMATS` (image folder, MDS, LitData, WebDataset),
  with its ``dataprune.json`` (:func:`~dataprune.formats.prepare.write_metadata`).

Training samples stay on disk: each epoch the pruner's sampler (or, for WebDataset, its filter
on member names) chooses what the workers read, so a pruned sample is never read nor decoded.
Workers decode the images to uint8; the main process normalises a whole batch on the training
device, as the resident data is. The test split is read once, at the start, and kept in memory
for evaluation. Where ``dataprune.json`` is absent (an image folder of your own), the per-channel
mean and std are estimated from up to :data:`STATS_SAMPLES` training images spread over the
folder, and there is no augmentation.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ...data import IndexedDataset
from ...formats import FORMATS
from ...pruner import Pruner
from ...sampler import PrunedBatchSampler
from ..files import is_staging
from .formats import DatasetError
from .resident import AUGMENTATIONS, Batch, ImageData, normaliser

logger = logging.getLogger("dataprune")

SPLITS = ("train", "test")
#: Training images decoded to estimate the normalisation of a folder without dataprune.json.
STATS_SAMPLES = 1024


class Decode:
    """A worker's transform: a stored sample to ``(uint8 C x H x W image, label)``, checking
    that every image has the size the model was built for and, with ``num_classes``, that every
    label is a class of ``where``'s data folder. Its errors do not name the sample: the reader
    that calls it does."""

    def __init__(self, shape: Sequence[int], where: Path, num_classes: int | None = None):
        self.shape = tuple(shape)
        self.where = where
        self.num_classes = num_classes

    def __call__(self, sample: Any) -> Any:
        # Pillow is an extra: imported where images are decoded, not with the harness
        from ...formats.images import decode_image, decode_sample

        if isinstance(sample, bytes):  # an image folder's file
            image: Tensor = decode_image(sample)
            label = None
        else:
            image, label = decode_sample(sample)
        if tuple(image.shape) != self.shape:
            raise DatasetError(
                f"an image of shape {tuple(image.shape)} among images of shape {self.shape} "
                "(C x H x W): the harness trains on images of one size and mode"
            )
        if label is None:
            return image
        if self.num_classes is not None and not 0 <= label < self.num_classes:
            raise DatasetError(
                f"label {label} is not a class: {self.where.parent / 'dataprune.json'} lists "
                f"{self.num_classes}, labels 0..{self.num_classes - 1}"
            )
        return image, label


@dataclass
class DiskData(ImageData):
    """An :class:`ImageData` whose training images stay on disk (``train_x`` holds none).

    ``test_x``/``test_y`` are resident, as for in-memory data; :meth:`batches` reads training
    batches through DataLoader workers.
    """

    root: Path = Path()
    data_format: str = "folder"
    train_size: int = 0
    num_workers: int = 0
    _indexed: Dataset | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def num_train(self) -> int:
        return self.train_size

    def batches(self, batches: PrunedBatchSampler) -> Iterable[Batch]:
        """Each epoch's ``(indices, x, y)`` batches, read from disk by :class:`EpochReader`,
        normalised on the device."""
        reader = EpochReader(
            self.data_format,
            self.root / "train",
            batches,
            Decode(self.train_x.shape[1:], self.root / "train", self.num_classes),
            self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        return _OnDevice(reader, self)

    @property
    def indexable(self) -> bool:
        return self.data_format != "webdataset"  # tar shards are read in order only

    def read(self, rows: Tensor, generator: torch.Generator | None = None) -> Batch:
        """``(rows, x, y)``: the training samples ``rows`` read from disk, normalised on the
        device (no augmentation: images on disk are used as they are)."""
        if self.data_format == "webdataset":
            raise DatasetError(
                f"{self.root}: this method measures samples it left out after each epoch, "
                "which needs reading chosen samples; WebDataset shards are read in order only: "
                "prepare the data as folder, mds or litdata, or choose another method"
            )
        if self._indexed is None:
            decode = Decode(self.train_x.shape[1:], self.root / "train")
            self._indexed = _map_style(
                self.data_format, self.root / "train", decode, 256, self.train_size
            )
        items = [self._indexed[i] for i in rows.tolist()]  # only the rows asked for
        x = torch.stack([torch.as_tensor(x) for _, (x, _) in items])
        y = torch.as_tensor([y for _, (_, y) in items], dtype=torch.int64)
        normalise = normaliser(self.mean, self.std, self.device)
        return rows, normalise(x.to(self.device)), y.to(self.device)


class EpochReader:
    """Each epoch's ``(indices, uint8 images, labels)`` batches of a training split on disk.

    Indexable formats are read in ``batches`` (this rank's share of the pruner's subset, in
    its order) by persistent DataLoader workers. WebDataset is read through
    :class:`~dataprune.formats.webdataset.PrunedWebDataset`, whose workers read the
    pruner's subset, so they start anew after each ``set_epoch``; each batches the samples of
    its own shards, so its last batch is short: batches are regrouped here into the batch size
    (the epoch's last one short), and an epoch takes as many steps as the sampler's (a method
    that keeps steps, whose batches shrink, cannot read a stream: it is refused).
    ``decode`` turns a stored sample into ``(image, label)`` (an image alone for a folder's
    file), in the workers.
    """

    def __init__(
        self,
        data_format: str,
        folder: Path,
        batches: PrunedBatchSampler,
        decode: Decode,
        num_workers: int,
        pin_memory: bool = False,
    ):
        pruner = batches.pruner
        self.batch_size = batch_size = batches.full_batch_size
        self.webdataset = None
        if data_format == "webdataset":
            if pruner.policy.keeps_steps():
                raise DatasetError(
                    f"{folder}: method={pruner.method!r} keeps a full epoch's step count on "
                    "smaller batches, which WebDataset shards, read in order, cannot give: "
                    "prepare the data as folder, mds or litdata"
                )
            self.webdataset = _webdataset(folder, pruner, decode)
            self.loader = DataLoader(
                self.webdataset,
                batch_size=batch_size,
                num_workers=num_workers,
                pin_memory=pin_memory,
            )
        else:
            self.loader = DataLoader(
                _map_style(data_format, folder, decode, batch_size, pruner.num_samples),
                batch_sampler=batches,
                num_workers=num_workers,
                persistent_workers=num_workers > 0,
                pin_memory=pin_memory,
            )

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if self.webdataset is not None:
            self.webdataset.snapshot_subset()  # before iter() starts the workers: see its doc
        batches: Iterable[tuple[Tensor, Tensor, Tensor]] = (
            (idx, x, torch.as_tensor(y, dtype=torch.int64)) for idx, (x, y) in _read(self.loader)
        )
        if self.webdataset is not None:
            batches = _regroup(batches, self.batch_size)
        return iter(batches)


class _OnDevice:
    """An :class:`EpochReader`'s batches on the data's device, normalised there."""

    def __init__(self, reader: EpochReader, data: DiskData):
        self.reader = reader
        self.device = data.device
        self.normalise = normaliser(data.mean, data.std, data.device)

    def __iter__(self) -> Iterator[Batch]:
        for idx, x, y in self.reader:
            yield (
                idx.to(self.device, non_blocking=True),
                self.normalise(x.to(self.device, non_blocking=True)),
                y.to(self.device, non_blocking=True),
            )


def _read(loader: DataLoader) -> Iterator[Any]:
    """``loader``'s batches; if reading fails (a bad sample, an interrupt), its workers stop at
    once. Left to the garbage collector, torch's cleanup of an unfinished iterator can find its
    queues gone first and wait 5 s for each worker, which never sees the stop signal. (A loop
    that only stops early keeps persistent workers for the next epoch.)"""
    batches = iter(loader)
    try:
        yield from batches
    except (Exception, KeyboardInterrupt):
        stop = getattr(batches, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if stop is not None:
            stop()
        raise


def _regroup(batches: Iterable[tuple[Tensor, ...]], size: int) -> Iterator[tuple[Tensor, ...]]:
    """The same samples in the same order, in batches of ``size`` (the last one shorter)."""
    held: list[tuple[Tensor, ...]] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += len(batch[0])
        while count >= size:
            whole = [torch.cat(parts) for parts in zip(*held, strict=True)]
            yield tuple(t[:size] for t in whole)
            held = [tuple(t[size:] for t in whole)]
            count -= size
    if count:
        yield tuple(torch.cat(parts) for parts in zip(*held, strict=True))


def _import(data_format: str):
    module, _, extra = FORMATS[data_format]
    try:
        return importlib.import_module(f"dataprune.formats.{module}")
    except Exception as error:  # noqa: BLE001 - streaming raises RuntimeError beside a bad torchvision
        raise DatasetError(
            f"reading {data_format} data needs its library, which does not import here "
            f"({type(error).__name__}: {error}): pip install 'dataprune[{extra}]'"
        ) from error


def _map_style(
    data_format: str, folder: Path, decode: Decode, batch_size: int, num_samples: int | None
) -> Dataset:
    """``(index, (image, label))`` for every sample of an indexable split of ``num_samples``
    (checked, unless None)."""
    module = _import(data_format)
    dataset: Dataset
    if data_format == "folder":
        dataset = IndexedDataset(module.ImageFolder(folder, decode=decode))
    elif data_format == "mds":
        from streaming import StreamingDataset

        mds = StreamingDataset(local=str(folder), batch_size=batch_size)
        dataset = module.MosaicIndexed(mds, decode)
    else:
        import litdata

        chunks = litdata.StreamingDataset(str(folder), batch_decode=0)
        dataset = module.LitDataIndexed(chunks, decode)
    _check_count(folder, len(dataset), num_samples)  # type: ignore[arg-type]
    return dataset


def _shards(folder: Path) -> list[str]:
    urls = sorted(str(p) for p in folder.glob("*.tar"))
    if not urls:
        raise DatasetError(f"{folder}: no .tar shards")
    return urls


def _webdataset(folder: Path, pruner: Pruner, decode: Decode, **kwargs: Any):
    return _import("webdataset").PrunedWebDataset(_shards(folder), pruner, decode, **kwargs)


def _check_split(data_format: str, folder: Path, num_samples: int) -> None:
    """Refuse a split that does not hold ``num_samples`` samples, from its file listing, index
    or tar headers (no sample is read), before anything is sized by that count."""
    if data_format == "webdataset":
        found = _import("webdataset").scan_shards(_shards(folder))
    elif data_format == "folder":
        found = len(_map_style(data_format, folder, None, 256, None))  # type: ignore[arg-type]
    else:
        found = _index_count(data_format, folder)
    _check_count(folder, found, num_samples)


def _check_count(folder: Path, found: int, expected: int | None) -> None:
    if expected is not None and found != expected:
        raise DatasetError(
            f"{folder} holds {found} samples, but {expected} were expected (dataprune.json's "
            "splits): write the folder again with dataprune prepare"
        )


def _index_count(data_format: str, folder: Path) -> int:
    """The samples a LitData or MDS split's ``index.json`` lists, once each chunk or shard file
    it lists is there, of the size it gives."""
    index = folder / "index.json"
    try:
        listed = json.loads(index.read_text())
        if data_format == "litdata":
            files = [
                ([(c["filename"], int(c["chunk_bytes"]))], int(c["chunk_size"]))
                for c in listed["chunks"]
            ]
        else:  # an MDS shard may be there raw, or only compressed
            files = [
                (
                    [(f["basename"], int(f["bytes"])) for f in (s["raw_data"], s["zip_data"]) if f],
                    int(s["samples"]),
                )
                for s in listed["shards"]
            ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DatasetError(
            f"{index}: not a readable {data_format} index ({type(error).__name__}: {error}); "
            "write the dataset again with dataprune prepare"
        ) from error
    for candidates, _ in files:
        sizes = [(folder / name, size) for name, size in candidates]
        if not any(path.is_file() and path.stat().st_size == size for path, size in sizes):
            path, size = sizes[0]
            what = "missing" if not path.is_file() else f"{path.stat().st_size} bytes"
            raise DatasetError(
                f"{path}: {what}, where {index} says {size} bytes: write the dataset again with "
                "dataprune prepare"
            )
    return sum(count for _, count in files)


def _read_split(data_format: str, folder: Path, num_samples: int, decode: Decode, workers: int):
    """Every sample of a split, in memory: uint8 images N x C x H x W and int64 labels."""
    if data_format == "webdataset":
        # A pruner that keeps every sample, on this rank alone: the whole split, once.
        everything = Pruner(num_samples, "full", epochs=1)
        everything.set_epoch(0)
        dataset: Any = _webdataset(folder, everything, decode, rank=0, world_size=1)
    else:
        dataset = _map_style(data_format, folder, decode, 256, num_samples)
    images = torch.empty((num_samples, *decode.shape), dtype=torch.uint8)
    labels = torch.full((num_samples,), -1, dtype=torch.int64)
    for idx, (x, y) in _read(DataLoader(dataset, batch_size=256, num_workers=workers)):
        images[idx], labels[idx] = x, torch.as_tensor(y, dtype=torch.int64)
    if (labels < 0).any():
        raise DatasetError(f"{folder}: holds fewer samples than the {num_samples} expected")
    return images, labels


def _describe_folder(root: Path) -> dict[str, Any]:
    """What ``dataprune.json`` would say of an image folder of one's own: classes, shape, counts
    and estimated pixel statistics (no augmentation)."""
    module = _import("folder")
    train, test = (module.ImageFolder(root / split) for split in SPLITS)
    train.decode = Decode(train[0][0].shape, root / "train")  # the first image sets the size
    if train.classes != test.classes:
        raise DatasetError(
            f"{root}: train/ and test/ hold different class folders ({len(train.classes)} and "
            f"{len(test.classes)}); each needs one folder per class, the same names in both"
        )
    spread = np.linspace(0, len(train) - 1, min(STATS_SAMPLES, len(train))).round().astype(int)
    sample = torch.stack([train[int(i)][0] for i in spread]).double()  # N x C x H x W
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3), correction=0).clamp_min(1e-6)
    logger.info(
        "%s has no dataprune.json: pixel mean/std estimated from %d training images, no "
        "augmentation",
        root,
        len(spread),
    )
    return {
        "format": "folder",
        "dataset": root.name,
        "classes": train.classes,
        "shape": list(sample.shape[1:]),
        "splits": {"train": len(train), "test": len(test)},
        "mean": mean.tolist(),
        "std": std.tolist(),
        "augment": "none",
    }


def load_disk_data(root: str | Path, num_workers: int = 0) -> DiskData:
    """The data folder ``root`` (see the module docstring) as a :class:`DiskData` on the CPU,
    its test split read into memory with ``num_workers`` DataLoader workers."""
    _import("folder")  # every format's images are PNG files decoded by Pillow, an extra
    from ...formats.prepare import METADATA, read_metadata

    root = Path(root).expanduser()
    if is_staging(root):
        raise DatasetError(
            f"data_path={str(root)!r} lies in a folder that dataprune prepare was writing and did "
            "not finish (it was killed): run the prepare again, which removes it"
        )
    missing = [split for split in SPLITS if not (root / split).is_dir()]
    if missing:
        raise DatasetError(
            f"data_path={str(root)!r} has no {' and no '.join(f'{s}/' for s in missing)} "
            "folder: it needs train/ and test/, each an image folder (one sub-folder per class) "
            "or shards written by dataprune prepare"
        )
    try:
        stored = read_metadata(root)
        meta = stored or _describe_folder(root)
    except (ValueError, FileNotFoundError) as error:  # bad metadata, or no images
        raise DatasetError(str(error)) from error
    data_format, shape, classes = meta["format"], meta["shape"], meta["classes"]
    described = root / METADATA if stored else root / "train"
    if len(classes) < 2:
        raise DatasetError(
            f"{described}: {len(classes)} class ({', '.join(classes)}): a classifier needs at "
            "least two; give each class its own sub-folder of train/ and test/"
        )
    if meta["augment"] not in AUGMENTATIONS:
        raise DatasetError(
            f"{described}: augment={meta['augment']!r} is not one of {', '.join(AUGMENTATIONS)}"
        )
    missing = [split for split in SPLITS if split not in meta["splits"]]
    if missing:
        raise DatasetError(f"{described}: splits has no {' and no '.join(missing)} count")
    for split in SPLITS:  # before any memory or pruner is sized by these counts
        _check_split(data_format, root / split, meta["splits"][split])
    test_x, test_y = _read_split(
        data_format,
        root / "test",
        meta["splits"]["test"],
        Decode(shape, root / "test", len(classes)),
        num_workers,
    )
    return DiskData(
        name=meta["dataset"],
        train_x=torch.empty((0, *shape)),
        train_y=torch.empty(0, dtype=torch.int64),
        test_x=normaliser(meta["mean"], meta["std"], "cpu")(test_x),
        test_y=test_y,
        num_classes=len(meta["classes"]),
        augment=meta["augment"],
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        root=root,
        data_format=data_format,
        train_size=meta["splits"]["train"],
        num_workers=num_workers,
    )
