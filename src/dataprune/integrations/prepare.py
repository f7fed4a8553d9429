"""Write a labelled uint8 image array into an image folder and each streaming format.

The writers use each format's own library (Pillow, ``MDSWriter``, ``litdata.optimize``,
``webdataset.ShardWriter``); every format stores the same PNG bytes, the label and the sample
index, so a run reads identical samples from any of them::

    from dataprune.integrations.prepare import prepare
    paths = prepare("shards", images, labels, formats=("folder", "webdataset"))
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .images import SHARD_BYTES, Sample, encode_png

# format -> (module, writer, the extra that installs its library)
FORMATS: dict[str, tuple[str, str, str]] = {
    "folder": ("images", "write_image_folder", "images"),
    "mds": ("mosaic", "write_mds", "mosaic"),
    "litdata": ("litdata", "write_litdata", "litdata"),
    "webdataset": ("webdataset", "write_webdataset", "webdataset"),
}


def encode_samples(images: np.ndarray, labels: np.ndarray, progress: bool = True) -> list[Sample]:
    """``(index, png, label)`` for uint8 ``images`` (N x H x W or N x H x W x C)."""
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    iterator = tqdm(images, desc="encoding PNG", unit="img", disable=not progress)
    return [(i, encode_png(image), int(labels[i])) for i, image in enumerate(iterator)]


def pixels(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 N x H x W (one channel) or N x H x W x C pixels of normalised N x C x H x W images,
    as the harness keeps them (``x * std + mean``, rounded)."""
    c = x.shape[1]
    scale = torch.tensor(std, dtype=torch.float64).view(1, c, 1, 1)
    shift = torch.tensor(mean, dtype=torch.float64).view(1, c, 1, 1)
    array = (x.cpu().double() * scale + shift).round().clamp(0, 255).to(torch.uint8).numpy()
    return array[:, 0] if c == 1 else array.transpose(0, 2, 3, 1)


def prepare(
    out_dir: str | os.PathLike[str],
    images: np.ndarray,
    labels: np.ndarray,
    formats: Sequence[str] = tuple(FORMATS),
    class_names: Sequence[str] | None = None,
    shard_bytes: int = SHARD_BYTES,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the samples into ``out_dir/<format>`` for each of ``formats`` (see :data:`FORMATS`).

    ``class_names`` name the image folder's class folders, in label order (default: the label,
    zero-padded). Shards and chunks hold about ``shard_bytes`` each.
    Returns ``{format: path}``: a folder, or for ``webdataset`` the folder holding the shards.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"formats={unknown} are not known; choose from: {', '.join(FORMATS)}")
    writers = {}
    for name in formats:  # import every writer first: a missing extra fails before any work
        module, function, extra = FORMATS[name]
        try:
            writers[name] = getattr(importlib.import_module(f"{__package__}.{module}"), function)
        except ImportError as error:
            raise ImportError(
                f"format {name!r} needs its library ({error.name}): "
                f"pip install 'dataprune[{extra}]'"
            ) from error
    samples = encode_samples(images, labels, progress)
    num_classes = int(labels.max()) + 1
    # zero-padded, so that the folder's sorted class names keep the labels' order
    names = list(class_names or [f"{c:0{len(str(num_classes - 1))}d}" for c in range(num_classes)])
    paths = {}
    for name, writer in tqdm(writers.items(), desc="writing", unit="format", disable=not progress):
        target = Path(out_dir) / name
        if name == "folder":
            paths[name] = writer(target, samples, names)
        else:
            writer(target, samples, shard_bytes)
            paths[name] = target
    return paths
