"""Format readers: each dataset's files decoded into uint8 arrays, with every field checked.

``digits`` is scikit-learn's bundled 8x8 digits (no files); ``fashion-mnist`` and ``mnist`` are
the original gzipped IDX files; ``cifar10`` and ``cifar100`` the original pickled python
batches, read with a restricted unpickler that can only rebuild numpy arrays, so a malicious
file runs no code.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataPruneError


class DatasetError(DataPruneError):
    """A dataset could not be found, downloaded, verified or parsed."""


_DIGITS_TEST_SIZE = 360
_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_TEST = ("test_batch",)


@dataclass
class RawData:
    """Decoded uint8 arrays (N x C x H x W) and int labels, before normalisation."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    augment: str


def _load_digits() -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images).round().astype(np.uint8)[:, None]  # N x 1 x 8 x 8, 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.RandomState(0).permutation(len(y))
    train, test = order[:-_DIGITS_TEST_SIZE], order[-_DIGITS_TEST_SIZE:]
    return RawData("digits", x[train], y[train], x[test], y[test], 10, "none")


# ---- IDX (MNIST, Fashion-MNIST)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse a (gzipped) IDX file of unsigned bytes, checking magic number and size."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: not a readable gzip file ({e})") from e
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DatasetError(f"{path}: bad IDX magic number {found}, expected {magic}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: IDX dims {dims} need {expected} bytes of data, file has {len(raw) - header}"
        )
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_dataset(name: str, folder: Path) -> RawData:
    arrays = {}
    for key, fname in _IDX_FILES.items():
        magic = _IDX_IMAGES_MAGIC if key.endswith("images") else _IDX_LABELS_MAGIC
        arrays[key] = _read_idx(folder / fname, magic)
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(x) != len(y):
            raise DatasetError(
                f"{folder / _IDX_FILES[f'{split}_labels']}: {len(y)} labels for {len(x)} images"
            )
        if y.size and y.max() >= 10:
            raise DatasetError(
                f"{folder / _IDX_FILES[f'{split}_labels']}: label {y.max()} out of range 0..9"
            )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(f"{folder}: train and test images differ in size")
    augment = "flip" if name == "fashion-mnist" else "none"
    return RawData(
        name,
        arrays["train_images"][:, None],
        arrays["train_labels"],
        arrays["test_images"][:, None],
        arrays["test_labels"],
        10,
        augment,
    )


# ---- CIFAR pickles


def _numpy_reconstruct():  # numpy >= 2 moved numpy.core to numpy._core
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _codecs_encode():
    import _codecs

    return _codecs.encode


_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str):
        factory = _SAFE_GLOBALS.get((module, name))
        if factory is None:
            raise DatasetError(
                f"refusing to unpickle {module}.{name} from {self._path}: only numpy arrays "
                "are allowed in dataset files"
            )
        return factory()


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except DatasetError:
        raise
    except Exception as e:  # malformed pickles raise many kinds of errors
        raise DatasetError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, ...]:
    # Original (Python 2) files have bytes keys; files re-pickled by Python 3 have str keys.
    d = {k.encode() if isinstance(k, str) else k: v for k, v in _unpickle(path).items()}
    if b"data" not in d or label_key not in d:
        keys = ", ".join(repr(k) for k in d)
        raise DatasetError(f"{path}: missing b'data' or {label_key!r} (keys: {keys})")
    data, labels = d[b"data"], d[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: b'data' must be a uint8 (n, 3072) array")
    if data.shape[1] != 3072:
        raise DatasetError(f"{path}: b'data' has shape {data.shape}, expected (n, 3072)")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{path}: {label_key!r} is not a list of integers") from e
    if len(y) != len(data):
        raise DatasetError(f"{path}: {len(y)} labels for {len(data)} images")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DatasetError(f"{path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), y


def _load_cifar(
    name: str,
    folder: Path,
    train: Sequence[str],
    test: Sequence[str],
    label_key: bytes,
    num_classes: int,
) -> RawData:
    def read(files: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_read_cifar_batch(folder / f, label_key, num_classes) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    tx, ty = read(train)
    vx, vy = read(test)
    return RawData(name, tx, ty, vx, vy, num_classes, "crop-flip")


#: Every dataset and its reader (a folder in, arrays out); ``digits`` needs no folder.
READERS: dict[str, Callable[[Path], RawData]] = {
    "digits": lambda _folder: _load_digits(),
    "fashion-mnist": lambda d: _load_idx_dataset("fashion-mnist", d),
    "mnist": lambda d: _load_idx_dataset("mnist", d),
    "cifar10": lambda d: _load_cifar("cifar10", d, _CIFAR10_TRAIN, _CIFAR10_TEST, b"labels", 10),
    "cifar100": lambda d: _load_cifar("cifar100", d, ("train",), ("test",), b"fine_labels", 100),
}
DATASETS = tuple(READERS)
_FILES = {
    "digits": (),
    "fashion-mnist": tuple(_IDX_FILES.values()),
    "mnist": tuple(_IDX_FILES.values()),
    "cifar10": _CIFAR10_TRAIN + _CIFAR10_TEST,
    "cifar100": ("train", "test"),
}


def required_files(name: str) -> tuple[str, ...]:
    """The files dataset ``name``'s reader needs in its folder."""
    return _FILES[name]
