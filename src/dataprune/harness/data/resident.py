"""The resident dataset: normalised float32 tensors on the training device, augmented there.

Every dataset is loaded once into memory (N x C x H x W, per-channel mean/std from the training
split) and moved to the training device. Batches are then cut by indexing and augmented on the
device with whole-batch tensor ops: no DataLoader, no worker process and no per-sample Python
code in the training loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import InvalidValue
from ...sampler import PrunedBatchSampler
from .formats import DATASETS, READERS, RawData
from .locate import file_checksums, locate, verify_dataset

logger = logging.getLogger("dataprune")

AUGMENTATIONS = ("none", "flip", "crop-flip")
CROP_PADDING = 4
Batch = tuple[Tensor, Tensor, Tensor]  # (sample indices, images, labels), on the device


def normaliser(
    mean: Sequence[float], std: Sequence[float], device: str | torch.device
) -> Callable[[Tensor], Tensor]:
    """uint8 N x C x H x W images (on ``device``) -> float32 ``(x - mean) / std`` per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return lambda x: x.to(torch.float32).sub_(m).div_(s)


@dataclass
class ImageData:
    """A labelled image dataset as tensors: ``train_x``/``test_x`` are float32 N x C x H x W.

    Pixels are normalised per channel with the mean/std of the (full) training split, kept in
    ``mean``/``std`` in raw pixel units. ``augment`` names the batch augmentation that
    :meth:`augment_batch` applies: ``"none"``, ``"flip"`` or ``"crop-flip"``.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: str = "none"
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    folder: Path | None = None  # where the files were read from (None: embedded data)

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise InvalidValue(
                f"augment={self.augment!r} is not known; choose one of: {', '.join(AUGMENTATIONS)}"
            )

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test samples."""
        return int(self.test_x.shape[0])

    @property
    def in_channels(self) -> int:
        """Number of image channels (1 for greyscale, 3 for colour)."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Height (= width) of the images in pixels."""
        return int(self.train_x.shape[-1])

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.train_x.device

    def to(self, device: str | torch.device) -> ImageData:
        """Return a copy with all tensors on ``device`` (``self`` if they already are)."""
        device = torch.device(device)
        tensors = (self.train_x, self.train_y, self.test_x, self.test_y)
        if all(t.device == device for t in tensors):
            return self
        tx, ty, vx, vy = (t.to(device) for t in tensors)
        return dataclasses.replace(self, train_x=tx, train_y=ty, test_x=vx, test_y=vy)

    def batches(self, batches: PrunedBatchSampler) -> Iterable[Batch]:
        """Each epoch's ``(indices, x, y)`` batches as ``batches`` cuts this rank's share of
        the pruner's subset, sliced from the resident tensors."""
        return _Slices(self, batches)

    @property
    def indexable(self) -> bool:
        """Whether :meth:`read` can read any training sample."""
        return True

    def read(self, rows: Tensor, generator: torch.Generator | None = None) -> Batch:
        """``(rows, x, y)``: the training samples ``rows``, augmented as in training from
        ``generator`` if one is given."""
        rows = rows.to(self.device)
        x = self.train_x[rows]
        if generator is not None:
            x = self.augment_batch(x, generator)
        return rows, x, self.train_y[rows]

    def checksums(self) -> dict[str, str]:
        """The sha256 of each file the data was read from (empty for embedded data)."""
        return file_checksums(self.name, self.folder)

    def augment_batch(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch ``x`` (B x C x H x W) on its own device with whole-batch ops.

        ``"flip"``: each image is mirrored left-right with probability 1/2. ``"crop-flip"``:
        each image is padded by 4 pixels (reflect) and cropped back to H x W at a random integer
        offset in [-4, 4] per axis, then flipped with probability 1/2 (two gathers: every
        output pixel is an input pixel). ``"none"``: ``x`` is returned as is. Random numbers are
        drawn from ``generator`` on its own device (e.g. a CPU generator while ``x`` is on CUDA)
        and moved to ``x.device``; the result is deterministic for a given generator state.
        """
        if self.augment == "none" or x.shape[0] == 0:
            return x
        if self.augment == "flip":
            return random_flip(x, generator)
        return random_crop_flip(x, CROP_PADDING, generator)


class _Slices:
    def __init__(self, data: ImageData, batches: PrunedBatchSampler):
        self.data, self.batches = data, batches

    def __iter__(self) -> Iterator[Batch]:
        order = self.batches.sampler.local_indices().to(self.data.device)
        for batch in self.batches.split(order):
            yield batch, self.data.train_x[batch], self.data.train_y[batch]


def _draw_int(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` random ints in [0, high) drawn on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image of ``x`` (B x C x H x W) left-right with probability 1/2."""
    flip = _draw_int(2, x.shape[0], generator, x.device).bool()
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop_flip(
    x: Tensor, padding: int = CROP_PADDING, generator: torch.Generator | None = None
) -> Tensor:
    """Random ``padding``-pixel translation (reflect padding) plus a random horizontal flip.

    Offsets are drawn per sample (rows, columns, flip, in that order) and applied with two
    ``gather`` calls on the padded batch: exact integer shifts, no interpolation.
    """
    b, c, h, w = x.shape
    span = 2 * padding + 1
    dy = _draw_int(span, b, generator, x.device)
    dx = _draw_int(span, b, generator, x.device)
    flip = _draw_int(2, b, generator, x.device).bool()
    mode = "reflect" if padding < min(h, w) else "replicate"
    padded = F.pad(x, (padding, padding, padding, padding), mode=mode)
    rows = torch.arange(h, device=x.device).unsqueeze(0) + dy.unsqueeze(1)  # B x H
    cols = torch.arange(w, device=x.device).unsqueeze(0)
    cols = torch.where(flip.unsqueeze(1), (w - 1) - cols, cols) + dx.unsqueeze(1)  # B x W
    out = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * padding))
    return out.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    train_limit: int | None = None,
    test_limit: int | None = None,
    device: str | torch.device = "cpu",
    verify: bool = False,
) -> ImageData:
    """Load dataset ``name`` (one of :data:`DATASETS`) as an :class:`ImageData` on ``device``.

    Files are looked up as :func:`~dataprune.harness.data.locate.resolve_data_dir` says (and
    in ``~/.cache/dataprune`` when no directory was chosen). Missing files are downloaded when
    ``download`` is true, into the chosen directory or else ``~/.cache/dataprune``; otherwise
    :class:`DatasetError` says where it looked. ``train_limit``/``test_limit`` keep only the
    first n samples of each split (normalisation statistics still come from the full split).
    ``verify`` rechecks the files' sha256 before reading them
    (:func:`~dataprune.harness.data.locate.verify_dataset`; the result is logged).
    """
    if name not in DATASETS:
        raise InvalidValue(f"dataset={name!r} is not known; choose one of: {', '.join(DATASETS)}")
    for label, limit in (("train_limit", train_limit), ("test_limit", test_limit)):
        if limit is not None and limit < 1:
            raise InvalidValue(f"{label} must be a positive number of samples, got {limit}")
    folder = None if name == "digits" else locate(name, data_dir, download)
    if verify:
        note = f"{name} is embedded: no files to verify"
        logger.info("%s", note if folder is None else verify_dataset(name, folder))
    raw = READERS[name](folder)
    for label, limit, available in (
        ("train_limit", train_limit, len(raw.train_y)),
        ("test_limit", test_limit, len(raw.test_y)),
    ):
        if limit is not None and limit > available:
            split = label.split("_")[0]
            raise InvalidValue(
                f"{label}={limit} exceeds the {available} {split} samples of {name}; "
                "leave it out to use them all"
            )
    data = _to_image_data(raw, train_limit, test_limit, torch.device(device))
    data.folder = folder
    return data


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of a uint8 N x C x H x W array (via 256-bin histograms)."""
    values = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        channel = torch.from_numpy(np.ascontiguousarray(x[:, c])).reshape(-1)
        hist = torch.bincount(channel, minlength=256).double().numpy()  # much faster than numpy
        n = hist.sum()
        mean = float((hist * values).sum() / n)
        var = float((hist * (values - mean) ** 2).sum() / n)
        means.append(mean)
        stds.append(max(var, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)


def _to_image_data(
    raw: RawData, train_limit: int | None, test_limit: int | None, device: torch.device
) -> ImageData:
    mean, std = _channel_stats(raw.train_x)
    normalise = normaliser(mean, std, device)

    def images(a: np.ndarray, limit: int | None) -> Tensor:
        # Move uint8 (4x smaller) to the device, convert and normalise there.
        return normalise(torch.from_numpy(np.ascontiguousarray(a[:limit])).to(device))

    def labels(a: np.ndarray, limit: int | None) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[:limit], dtype=np.int64)).to(device)

    return ImageData(
        name=raw.name,
        train_x=images(raw.train_x, train_limit),
        train_y=labels(raw.train_y, train_limit),
        test_x=images(raw.test_x, test_limit),
        test_y=labels(raw.test_y, test_limit),
        num_classes=raw.num_classes,
        augment=raw.augment,
        mean=mean,
        std=std,
    )
