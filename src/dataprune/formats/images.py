"""PNG images without torchvision: encode, decode, and an on-disk folder of one class per folder.

Needs Pillow (``pip install 'dataprune[images]'``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import DataPruneError, InvalidValue

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INDEX_FORMAT = "08d"  # sample index in file names and WebDataset keys: sorts as it counts
SHARD_BYTES = 1 << 26  # the shard writers' default size, MDSWriter's own
Sample = tuple[int, bytes, int]  # (global index, PNG bytes, label), as the shard writers take


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image, H x W (greyscale) or H x W x C (C = 3 or 4)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise InvalidValue(
            f"image must be a uint8 array of shape (H, W) or (H, W, C), got {image.dtype} "
            f"{image.shape}"
        )
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(data: bytes | bytearray | memoryview) -> Tensor:
    """Decode PNG or JPEG bytes into a uint8 tensor C x H x W (C = 1 for greyscale).

    Bytes that Pillow cannot decode (truncated, not an image, a decompression bomb) raise
    :class:`~dataprune.errors.InvalidValue`, which the readers here prefix with the file.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return pil_to_tensor(image)
    except UnidentifiedImageError as error:  # its message names the BytesIO object
        raise InvalidValue("not an image: Pillow knows no image format in it") from error
    except Exception as error:  # noqa: BLE001 - Pillow fails on bad bytes with many error types
        reason = (str(error).strip().splitlines() or ["no details"])[0]
        raise InvalidValue(
            f"not a readable PNG or JPEG image ({type(error).__name__}: {reason})"
        ) from error


def located(error: DataPruneError, where: str, fix: str) -> DataPruneError:
    """``error``, raised while reading the sample at ``where`` (a file, or a shard and its
    member), as an error of its type in one line that names it first and ends with ``fix``."""
    return type(error)(f"{where}: {error}; {fix}")


class IndexedStore(Dataset):
    """``(index, transform(store[index]))`` for each global sample index of an indexable store
    (LitData, MDS); a stored sample that cannot be read is an error naming ``where`` it is."""

    where = "the dataset"  # for errors: the store's folder

    def __init__(self, store: Any, transform: Callable[[Any], Any] | None = None):
        self.dataset = store
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[int, Any]:
        sample = self.dataset[index]
        if self.transform is None:
            return index, sample
        try:
            return index, self.transform(sample)
        except DataPruneError as error:  # a bad stored sample: say which
            raise located(error, f"{self.where}: sample {index}", "write it again") from error


def pil_to_tensor(image: Image.Image) -> Tensor:
    """A PIL image as a uint8 tensor C x H x W (greyscale stays one channel)."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    array = np.array(image)  # a writable copy: torch refuses to share read-only memory
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class ImageFolder(Dataset):
    """Images on disk, one sub-folder per class (``root/<class>/<file>.png``), decoded in workers.

    Classes are the sorted sub-folder names; sample ``i`` is the i-th file in (class, file name)
    order, so the index is the same in every process, epoch and worker, as the pruner's
    statistics need. An item is ``(image, label)``: ``decode`` turns the file's bytes into the
    image (default :func:`decode_image`, a uint8 tensor C x H x W), then ``transform`` applies,
    if given. Wrap it in :class:`dataprune.IndexedDataset` and read it through
    ``pruner.sampler()``: a pruned file is never opened.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        decode: Callable[[bytes], Any] = decode_image,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root={str(root)!r} is not a folder of class folders")
        self.classes = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        files, labels = [], []
        for label, name in enumerate(self.classes):
            names = sorted(
                entry.name
                for entry in os.scandir(self.root / name)
                if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)
            )
            files += [f"{name}/{file}" for file in names]
            labels += [label] * len(names)
        if not files:
            raise FileNotFoundError(
                f"no {', '.join(IMAGE_SUFFIXES)} files under {str(root)!r}: expected "
                "root/<class>/<image file>"
            )
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.transform = transform
        self.decode = decode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, Tensor]:
        path = self.root / self.files[index]
        try:
            image = self.decode(path.read_bytes())
        except DataPruneError as error:
            raise located(error, str(path), "replace or remove the file") from error
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


def write_image_folder(
    out_dir: str | os.PathLike[str], samples: Iterable[Sample], class_names: Sequence[str]
) -> Path:
    """Write ``(index, png, label)`` samples as ``out_dir/<class name>/<index>.png``.

    File names are the zero-padded index, so :class:`ImageFolder` lists each class's samples in
    their original order. Returns ``out_dir``.
    """
    out = Path(out_dir)
    for name in class_names:
        (out / name).mkdir(parents=True, exist_ok=True)
    for index, png, label in samples:
        (out / class_names[label] / f"{index:{INDEX_FORMAT}}.png").write_bytes(png)
    return out


def decode_sample(sample: Mapping[str, Any]) -> tuple[Tensor, int]:
    """``(image, label)`` of a sample dict written by :mod:`dataprune.formats.prepare`.

    Decodes ``sample["png"]`` (:func:`decode_image`); ``sample["label"]`` may be an int or, as
    WebDataset gives it, the bytes of its decimal text.
    """
    missing = [key for key in ("png", "label") if key not in sample]
    if missing:
        held = ", ".join(sorted(k for k in sample if not k.startswith("__"))) or "nothing"
        raise InvalidValue(f"the sample has no {' and no '.join(missing)} (it holds {held})")
    label = sample["label"]
    text = label.decode(errors="replace") if isinstance(label, bytes) else label
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or isinstance(text, float) and value != text:
        raise InvalidValue(f"label {text!r} is not a whole number (a class index)")
    return decode_image(sample["png"]), value
