"""Write a labelled uint8 image array into an image folder and each streaming format.

The writers use each format's own library (Pillow, ``MDSWriter``, ``litdata.optimize``,
``webdataset.ShardWriter``); every format stores the same PNG bytes, the label and the sample
index, so a run reads identical samples from any of them::

    from dataprune.formats.prepare import prepare
    paths = prepare("shards", images, labels, formats=("folder", "webdataset"))

With ``split``, each format gets one folder per split (``shards/<format>/train``,
``shards/<format>/test``), the layout the harness reads (``dataprune train --data-path``), and
:func:`write_metadata` records beside them what the images alone do not tell (class names,
normalisation, augmentation).
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import InvalidValue
from . import FORMATS
from .images import SHARD_BYTES, Sample, encode_png

#: The metadata file in a format's folder (see :func:`write_metadata`).
METADATA = "dataprune.json"
_METADATA_FIELDS = ("format", "dataset", "classes", "shape", "splits", "mean", "std", "augment")


def encode_samples(images: np.ndarray, labels: np.ndarray, progress: bool = True) -> list[Sample]:
    """``(index, png, label)`` for uint8 ``images`` (N x H x W or N x H x W x C)."""
    if len(images) != len(labels):
        raise InvalidValue(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    labels = class_indices(labels)
    iterator = tqdm(images, desc="encoding PNG", unit="img", disable=not progress)
    return [(i, encode_png(image), int(labels[i])) for i, image in enumerate(iterator)]


def class_indices(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """``labels`` as int64 class indices, refusing any that is not a whole number in
    ``[0, num_classes)`` (``num_classes`` None: any non-negative one) rather than rounding it."""
    array = np.asarray(labels)
    if array.ndim != 1 or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise InvalidValue(
            f"labels must be a 1-D array of class indices, got {array.dtype} {array.shape}"
        )
    with np.errstate(invalid="ignore"):
        values = array.astype(np.int64)
    bad = np.flatnonzero((values != array) | (values < 0))
    if num_classes is not None:
        bad = np.union1d(bad, np.flatnonzero(values >= num_classes))
    if len(bad):
        at = int(bad[0])
        what = "is not a whole number" if values[at] != array[at] else "is not a class index"
        limit = "" if num_classes is None else f" up to {num_classes - 1} (one a class name)"
        raise InvalidValue(
            f"labels[{at}]={array[at].item()!r} {what}: labels are class indices 0, 1, ..."
            f"{limit}; {len(bad)} of {len(array)} labels are not"
        )
    return values


def pixels(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 N x H x W (one channel) or N x H x W x C pixels of normalised N x C x H x W images,
    as the harness keeps them (``x * std + mean``, rounded)."""
    c = x.shape[1]
    scale = torch.tensor(std, dtype=torch.float64).view(1, c, 1, 1)
    shift = torch.tensor(mean, dtype=torch.float64).view(1, c, 1, 1)
    array = (x.cpu().double() * scale + shift).round().clamp(0, 255).to(torch.uint8).numpy()
    return array[:, 0] if c == 1 else array.transpose(0, 2, 3, 1)


def class_folder_names(num_classes: int) -> list[str]:
    """Class folder names for labels ``0 .. num_classes - 1``: the label, zero-padded, so that
    the folder's sorted class names keep the labels' order."""
    return [f"{c:0{len(str(num_classes - 1))}d}" for c in range(num_classes)]


def prepare(
    out_dir: str | os.PathLike[str],
    images: np.ndarray,
    labels: np.ndarray,
    formats: Sequence[str] = tuple(FORMATS),
    class_names: Sequence[str] | None = None,
    shard_bytes: int = SHARD_BYTES,
    progress: bool = True,
    split: str | None = None,
) -> dict[str, Path]:
    """Write the samples into ``out_dir/<format>`` for each of ``formats`` (see :data:`FORMATS`).

    ``class_names`` name the image folder's class folders, in label order (default: the label,
    zero-padded). Shards and chunks hold about ``shard_bytes`` each. With ``split`` (such as
    ``"train"``) the samples go into ``out_dir/<format>/<split>``.
    Returns ``{format: path}``: a folder, or for ``webdataset`` the folder holding the shards.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InvalidValue(f"formats={unknown} are not known; choose from: {', '.join(FORMATS)}")
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
    labels = class_indices(labels, None if class_names is None else len(class_names))
    samples = encode_samples(images, labels, progress)
    names = list(class_names or class_folder_names(int(labels.max()) + 1))
    paths = {}
    for name, writer in tqdm(writers.items(), desc="writing", unit="format", disable=not progress):
        target = Path(out_dir) / name / (split or "")
        if name == "folder":
            paths[name] = writer(target, samples, names)
        else:
            writer(target, samples, shard_bytes)
            paths[name] = target
    return paths


def write_metadata(
    folder: str | os.PathLike[str],
    *,
    data_format: str,
    dataset: str,
    classes: Sequence[str],
    shape: Sequence[int],
    splits: dict[str, int],
    mean: Sequence[float],
    std: Sequence[float],
    augment: str = "none",
) -> Path:
    """Write ``folder/dataprune.json``: what a reader of ``folder``'s splits needs besides them.

    ``shape`` is one image's C x H x W, ``splits`` the sample count of each split folder,
    ``mean``/``std`` the per-channel pixel statistics (raw pixel units) of the training split
    and ``augment`` the batch augmentation that suits the images (``none``, ``flip`` or
    ``crop-flip``). Returns the file's path.
    """
    if data_format not in FORMATS:
        raise InvalidValue(
            f"data_format={data_format!r} is not known; choose from: {', '.join(FORMATS)}"
        )
    fields = {
        "format": data_format,
        "dataset": dataset,
        "classes": list(classes),
        "shape": [int(v) for v in shape],
        "splits": {k: int(v) for k, v in splits.items()},
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "augment": augment,
    }
    path = Path(folder) / METADATA
    path.write_text(json.dumps(fields, indent=2) + "\n")
    return path


def read_metadata(folder: str | os.PathLike[str]) -> dict | None:
    """The fields :func:`write_metadata` wrote into ``folder``, or None if it has no such file."""
    path = Path(folder) / METADATA
    if not path.is_file():
        return None
    try:
        fields = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidValue(f"{path}: not a readable {METADATA} ({error})") from error
    if not isinstance(fields, dict):
        raise InvalidValue(f"{path}: not a {METADATA} (a JSON object)")
    missing = [k for k in _METADATA_FIELDS if k not in fields]
    if missing:
        raise InvalidValue(
            f"{path}: missing {', '.join(missing)}; write it again (dataprune prepare does)"
        )
    _check_metadata(path, fields)
    return fields


def _check_metadata(path: Path, fields: dict) -> None:
    """Each field of a ``dataprune.json`` is of the kind :func:`write_metadata` writes."""

    def refuse(name: str, what: str) -> None:
        raise InvalidValue(
            f"{path}: {name}={fields[name]!r} {what}; write it again (dataprune prepare does)"
        )

    def whole(value: object, low: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    def numbers(value: object) -> bool:
        return isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )

    if fields["format"] not in FORMATS:
        refuse("format", f"is not one of {', '.join(FORMATS)}")
    if not isinstance(fields["dataset"], str):
        refuse("dataset", "is not a name")
    classes = fields["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        refuse("classes", "is not a list of class names")
    if len(set(classes)) < len(classes) or not classes:
        refuse("classes", "is empty or repeats a name")
    shape = fields["shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(whole(v, 1) for v in shape)):
        refuse("shape", "is not an image's [C, H, W] (positive integers)")
    if shape[0] not in (1, 3):
        refuse("shape", "has a channel count other than 1 (greyscale) or 3 (RGB)")
    splits = fields["splits"]
    if not isinstance(splits, dict) or not all(whole(v, 1) for v in splits.values()):
        refuse("splits", "is not a sample count (an integer >= 1) for each split")
    for name in ("mean", "std"):
        if not numbers(fields[name]) or len(fields[name]) != shape[0]:
            refuse(name, f"is not {shape[0]} finite numbers, one a channel")
    if min(fields["std"]) <= 0:
        refuse("std", "holds a standard deviation <= 0, which normalisation divides by")
    if not isinstance(fields["augment"], str):
        refuse("augment", "is not the name of an augmentation")
